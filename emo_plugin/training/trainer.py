"""The training run: setup, the iteration loop, validation, checkpoints, NaN policy, SIGTERM.

Backend-independent: ``HostBackend`` (CPU/gloo, plain PyTorch step) or ``MegatronBackend`` (GPU, Megatron's
DDP/optimizer/schedules) does the step and says what goes into a checkpoint; everything else is here.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

from emo_plugin.training import checkpoint
from emo_plugin.training.builders import build_transformer_config, padded_vocab_size, resolve_device, resolved_size
from emo_plugin.training.config import ConfigError, TrainingConfig, to_dict
from emo_plugin.training.data import build_datasets, get_micro_batch, sample_indices
from emo_plugin.training.distributed import initialize, initialize_model_parallel, shutdown
from emo_plugin.training.flops import flops_per_token, peak_tflops
from emo_plugin.training.reporting import Reporter
from emo_plugin.training.schedule import learning_rate
from emo_plugin.training.signals import StopRequest
from emo_plugin.training.validation import data_parallel_size, validate


class NonFiniteLossError(RuntimeError):
    """Raised with ``nan_policy: stop`` when a step's loss or gradient norm is NaN/inf."""


def _check_host_expert_parallel(cfg: TrainingConfig, device: str) -> None:
    if device == "cpu" and cfg.parallel.expert_model_parallel_size > 1:
        try:
            torch.cuda.current_device()
        except (RuntimeError, AssertionError):
            raise ConfigError(
                f"parallel.expert_model_parallel_size={cfg.parallel.expert_model_parallel_size}: expected 1 on CPU; "
                "megatron-core 0.19.2 allocates expert-parallel gathers on torch.cuda.current_device() "
                "(tensor_parallel/mappings.py:145)"
            ) from None


class Trainer:
    def __init__(self, cfg: TrainingConfig):
        validate(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg)
        if self.device == "cuda":  # before any device work: refuse a layout the planner says cannot fit
            from emo_plugin.planning.fit_check import check_fits
            from emo_plugin.training.distributed import launch_env

            check_fits(cfg, launch_env().world_size)
        launch = initialize(cfg, self.device)
        validate(cfg, world_size=launch.world_size)
        _check_host_expert_parallel(cfg, self.device)
        initialize_model_parallel(cfg)
        get_moe_metrics_tracker().clear()
        self.dp_size = data_parallel_size(cfg, launch.world_size)
        self.dp_rank = parallel_state.get_data_parallel_rank(with_context_parallel=False)
        self.size = resolved_size(cfg)
        self.seq_length = self.size.seq_length
        b = cfg.batch
        self.num_micro = b.global_batch_size // (b.micro_batch_size * self.dp_size)
        evals = (cfg.schedule.train_iters // max(1, cfg.eval.interval) + 2) if cfg.eval.interval else 2
        self.data = build_datasets(
            cfg,
            self.seq_length,
            cfg.schedule.train_iters * b.global_batch_size,
            max(1, cfg.eval.iters) * b.micro_batch_size * self.dp_size * self.num_micro * evals,
        )
        vocab = cfg.model.vocab_size or padded_vocab_size(self.data.tokenizer.vocab_size, cfg.parallel.tensor_model_parallel_size)
        if vocab < self.data.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={vocab}: expected >= the tokenizer's {self.data.tokenizer.vocab_size}")
        self.vocab_size = vocab
        torch.manual_seed(cfg.seed)
        self.transformer_config = build_transformer_config(cfg, self.device)
        if self.device == "cpu":
            from emo_plugin.training.host_backend import HostBackend as Backend
        else:
            from emo_plugin.training.megatron_backend import MegatronBackend as Backend
        self.backend = Backend(cfg, self.transformer_config, vocab_size=vocab, seq_length=self.seq_length)
        self.reporter = Reporter(cfg, device=self.device, num_layers=self.size.num_layers)
        self.iteration = 0
        self.consumed_samples = 0
        self.last_saved = None
        self.flops_per_token = flops_per_token(self.size, vocab, self.seq_length)
        self.peak = peak_tflops(cfg.logging.peak_tflops, self.device)

    # -- data ----------------------------------------------------------------------------------------
    def _micro_batches(self, dataset, consumed: int) -> list[dict]:
        b = self.cfg.batch
        torch_device = torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device("cpu")
        return [
            get_micro_batch(
                dataset,
                sample_indices(consumed, m, b.micro_batch_size, self.dp_rank, self.dp_size),
                seed=self.cfg.seed,
                max_docs=self.transformer_config.emo.max_documents_per_sequence,
                device=torch_device,
            )
            for m in range(self.num_micro)
        ]

    # -- checkpoints ---------------------------------------------------------------------------------
    def _save(self) -> None:
        root = self.cfg.checkpoint.save
        if not root or self.iteration == self.last_saved:
            return
        self.last_saved = self.iteration
        state = self.backend.sharded_state_dict()
        common = {
            "iteration": self.iteration,
            "consumed_samples": self.consumed_samples,
            "world_size": dist.get_world_size(),
            "config": to_dict(self.cfg),
            **self.backend.common_state(),
        }
        state.update(common)
        path = checkpoint.save(root, self.iteration, state, self.backend.save_strategy)
        self.reporter.message(f" saved checkpoint at iteration {self.iteration:7d} to {path}")

    def _maybe_load(self) -> None:
        root = self.cfg.checkpoint.load or self.cfg.checkpoint.save
        if not root:
            return
        checkpoint.remove_incomplete(root)
        iteration = checkpoint.latest_iteration(root)
        if iteration is None:
            return
        common = checkpoint.load_common(root, iteration)
        same_world = common.get("world_size") == dist.get_world_size()
        state = self.backend.sharded_state_dict(is_loading=True, include_rng=same_world)
        loaded = checkpoint.load(root, iteration, state)
        self.backend.load_state(loaded, common)
        self.iteration, self.consumed_samples = common["iteration"], common["consumed_samples"]
        self.last_saved = iteration
        self.reporter.message(f" loaded checkpoint from {checkpoint.iteration_dir(root, iteration)} at iteration {iteration}")

    # -- the loop ------------------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.cfg.eval.iters or self.data.valid is None:
            return
        b = self.cfg.batch
        losses = [
            self.backend.eval_loss(self._micro_batches(self.data.valid, i * b.global_batch_size))
            for i in range(self.cfg.eval.iters)
        ]
        self.reporter.validation(self.iteration, sum(losses) / len(losses))

    def train(self) -> int:
        cfg = self.cfg
        stop = StopRequest()
        try:
            self._maybe_load()
            while self.iteration < cfg.schedule.train_iters:
                start = time.time()
                batches = self._micro_batches(self.data.train, self.consumed_samples)
                lr = learning_rate(self.iteration + 1, cfg.optimizer, cfg.schedule)
                result = self.backend.train_step(batches, lr, cfg.nan_policy)
                self.iteration += 1
                self.consumed_samples += cfg.batch.global_batch_size
                if not result["finite"] and cfg.nan_policy == "stop":
                    raise NonFiniteLossError(
                        f"iteration {self.iteration}: non-finite training step (lm loss {result['lm loss']}, "
                        f"grad norm {result['grad-norm']}); nan_policy=stop. Set nan_policy=skip to skip such steps."
                    )
                elapsed = time.time() - start
                tokens_per_sec = cfg.batch.global_batch_size * self.seq_length / elapsed
                tflops = self.flops_per_token * tokens_per_sec / dist.get_world_size() / 1e12
                self.reporter.step(
                    self.iteration,
                    {
                        "lm loss": result["lm loss"],
                        "grad-norm": result["grad-norm"],
                        "learning-rate": lr,
                        "iteration-time": elapsed,
                        "batch-size": float(cfg.batch.global_batch_size),
                        "throughput/tokens-per-sec": tokens_per_sec,
                        "throughput": tflops,
                        "mfu": tflops / self.peak if self.peak else None,
                        "skipped": 0.0 if result["finite"] else 1.0,
                    },
                    self.consumed_samples,
                    self.num_micro,
                )
                if cfg.eval.interval and self.iteration % cfg.eval.interval == 0:
                    self._validate()
                interval = cfg.checkpoint.save_interval
                if interval and self.iteration % interval == 0 and self.iteration < cfg.schedule.train_iters:
                    self._save()
                if stop.agreed():
                    self.reporter.message(f" SIGTERM received: saving at iteration {self.iteration} and exiting")
                    self._save()
                    return 0
            if not cfg.eval.interval or self.iteration % cfg.eval.interval:
                self._validate()
            self._save()
            return 0
        finally:
            stop.restore()
            self.reporter.close()


def run(cfg: TrainingConfig) -> int:
    try:
        return Trainer(cfg).train()
    finally:
        shutdown()
