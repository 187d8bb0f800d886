"""The training run: setup, the iteration loop, validation, checkpoints, NaN policy, stopping early.

Backend-independent: ``HostBackend`` (CPU/gloo, plain PyTorch step) or ``MegatronBackend`` (GPU, Megatron's
DDP/optimizer/schedules) does the step and says what goes into a checkpoint; everything else is here.
Where a run starts is ``start_point``'s decision; how it ends is the contract in ``exit_codes``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

from emo_plugin import checkpoint
from emo_plugin.errors import ConfigError
from emo_plugin.model.record import RECORD_KEY
from emo_plugin.moe.eval_pool import evaluation_pool
from emo_plugin.planning.fit_check import check_fits
from emo_plugin.run import exit_codes
from emo_plugin.run.config import TrainingConfig, to_dict
from emo_plugin.run.flops import flops_per_token, peak_tflops
from emo_plugin.run.resolve import ResolvedRun, resolve
from emo_plugin.training import anneal, architecture_check, start_point
from emo_plugin.training.data import build_datasets, get_micro_batch, sample_indices
from emo_plugin.training.distributed import initialize, initialize_model_parallel, launch_env, shutdown
from emo_plugin.training.packed_sequences import thd_packing_for_run
from emo_plugin.training.reporting import Reporter
from emo_plugin.training.signals import StopRequest


class NonFiniteLossError(RuntimeError):
    """Raised with ``nan_policy: stop`` when a step's loss or gradient norm is NaN/inf."""


def _check_host_expert_parallel(cfg: TrainingConfig, device: str) -> None:
    if device == "cpu" and cfg.parallel.expert_model_parallel_size > 1:
        try:
            torch.cuda.current_device()
        except (RuntimeError, AssertionError):
            raise ConfigError(
                f"parallel.expert_model_parallel_size={cfg.parallel.expert_model_parallel_size}: expected 1 on CPU; "
                "megatron-core allocates expert-parallel gathers on torch.cuda.current_device()"
            ) from None


class Trainer:
    def __init__(self, run: ResolvedRun):
        """``run``: the resolved run (``emo_plugin/run/resolve.py``), checked to fit (``planning/fit_check.py``)."""
        cfg = run.config
        self.run, self.cfg, self.device = run, cfg, run.device
        initialize(cfg, self.device)
        _check_host_expert_parallel(cfg, self.device)
        initialize_model_parallel(cfg)
        self.start = start_point.choose(cfg)  # before the data and model: a bad checkpoint.load fails fast
        self.anneal = anneal.anneal_start(cfg, self.start)
        get_moe_metrics_tracker().clear()
        self.dp_rank = parallel_state.get_data_parallel_rank(with_context_parallel=False)
        self.data = build_datasets(run)
        torch.manual_seed(cfg.seed)
        self.packing = thd_packing_for_run(run)
        if self.device == "cpu":
            from emo_plugin.training.host_backend import HostBackend as Backend
        else:
            from emo_plugin.training.megatron_backend import MegatronBackend as Backend
        self.backend = Backend(run, anneal=self.anneal)
        self.reporter = Reporter(cfg, device=self.device, num_layers=self.run.record.num_layers)
        self.iteration = 0
        self.consumed_samples = 0
        self.last_saved = None
        self.skipped = 0
        self.learning_rate = None  # of the last step taken; recorded in checkpoints for a later anneal
        self.flops_per_token = flops_per_token(self.run.record, self.run.vocab_size, self.run.seq_length)
        self.peak = peak_tflops(cfg.logging.peak_tflops, self.device)

    # -- data ----------------------------------------------------------------------------------------
    def _micro_batches(self, dataset, consumed: int) -> list[dict]:
        b = self.cfg.batch
        torch_device = (
            torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device("cpu")
        )
        return [
            get_micro_batch(
                dataset,
                sample_indices(consumed, m, b.micro_batch_size, self.dp_rank, self.run.data_parallel_size),
                seed=self.cfg.seed,
                max_docs=self.run.transformer_config.emo.max_documents_per_sequence,
                device=torch_device,
                packing=self.packing,
                eod_token_id=self.run.record.eos_token_id,
                eos_grouping=self.run.record.eos_grouping,
            )
            for m in range(self.run.num_micro_batches)
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
            RECORD_KEY: self.run.record.to_dict(),
            "vocab_size": self.run.vocab_size,
            "skipped_steps": self.skipped,
            anneal.LEARNING_RATE_KEY: self.learning_rate,
            **(self.anneal.to_common() if self.anneal else {}),
            **self.backend.common_state(),
        }
        state.update(common)
        protect = {self.start.iteration} if self.start.root is not None and self.start.root == Path(root) else set()
        path = checkpoint.save(root, self.iteration, state, self.backend.save_strategy,
                               keep_last_n=self.cfg.checkpoint.keep_last_n, protect=protect)
        self.reporter.message(f" saved checkpoint at iteration {self.iteration:7d} to {path}")

    def _maybe_load(self) -> None:
        start = self.start
        if start.root is None:
            self.reporter.message(f" no checkpoint loaded: {start.reason}")
            return
        folder = start.folder
        current = architecture_check.architecture(self.run.record)
        architecture_check.check_fields(architecture_check.stored_architecture(start.common), current, folder)
        model_state = self.backend.model_sharded_state_dict()
        architecture_check.check_tensor_shapes(model_state, folder)
        if start.weights_only:
            self.backend.load_weights(checkpoint.load(start.root, start.iteration, model_state))
            kind = "weights only: iteration, optimizer, data position and RNG start fresh"
        else:
            common = start.common
            same_world = common.get("world_size") == dist.get_world_size()
            state = self.backend.sharded_state_dict(is_loading=True, include_rng=same_world)
            loaded = checkpoint.load(start.root, start.iteration, state)
            self.backend.load_state(loaded, common)
            self.iteration, self.consumed_samples = common["iteration"], common["consumed_samples"]
            self.skipped = common.get("skipped_steps", 0)
            self.learning_rate = common.get(anneal.LEARNING_RATE_KEY)
            save = self.cfg.checkpoint.save
            self.last_saved = self.iteration if save and start.root == Path(save) else None
            kind = "full training state" + ("" if same_world else f"; world size {common.get('world_size')} -> "
                                            f"{dist.get_world_size()}: per-rank host RNG state not restored")
        self.reporter.message(f" loaded checkpoint from {folder} at iteration {start.iteration} ({kind}): "
                              f"{start.reason}")
        if self.anneal:
            self.reporter.message(f" anneal: linear from lr {self.anneal.lr:.6E} at iteration "
                                  f"{self.anneal.iteration + 1} to {self.cfg.schedule.anneal_min_lr:.6E} at "
                                  f"iteration {self.cfg.schedule.train_iters}")

    # -- the loop ------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Both validation losses: plain top-k over all routed experts (what the exported HF model computes by
        default, and the paper's full-model metric) and with the ``emo.pool_eval`` document pools."""
        if not self.cfg.eval.iters or self.data.valid is None:
            return
        with evaluation_pool(self.backend.model, None):
            plain = self._eval_loss()
        emo = self.run.transformer_config.emo
        pooled = plain if emo.pool_eval >= self.run.transformer_config.num_selectable_experts else self._eval_loss()
        self.reporter.validation(self.iteration, plain, pooled, emo.pool_eval)

    def _eval_loss(self) -> float:
        b = self.cfg.batch
        losses = [
            self.backend.eval_loss(self._micro_batches(self.data.valid, i * b.global_batch_size))
            for i in range(self.cfg.eval.iters)
        ]
        return sum(losses) / len(losses)

    def _skip_summary(self, finished: bool) -> None:
        """With nan_policy=skip: how many steps were skipped; an error at the end if more than allowed."""
        cfg = self.cfg
        if cfg.nan_policy != "skip" or not self.iteration:
            return
        share = self.skipped / self.iteration
        self.reporter.message(f" nan_policy=skip: {self.skipped} of {self.iteration} steps skipped "
                              f"(non-finite loss or gradient norm)")
        if finished and share > cfg.nan_max_skipped_fraction:
            raise NonFiniteLossError(
                f"{self.skipped} of {self.iteration} steps were skipped ({share:.0%}), more than "
                f"nan_max_skipped_fraction={cfg.nan_max_skipped_fraction:g}: the saved weights saw only "
                f"{self.iteration - self.skipped} updates. Lower optimizer.lr or check the data; raise "
                "nan_max_skipped_fraction to accept such a run."
            )

    def _stop_early(self, reason: str, start_iteration: int) -> int:
        """Save and return ``RESUMABLE``, or ``ERROR`` when there is nowhere to save the steps just trained."""
        if not self.cfg.checkpoint.save:
            self.reporter.message(f" {reason} at iteration {self.iteration}: checkpoint.save is not set, so the "
                                  f"{self.iteration - start_iteration} steps of this attempt are lost; exiting "
                                  f"{exit_codes.ERROR}")
            return exit_codes.ERROR
        self.reporter.message(f" {reason} at iteration {self.iteration}: saving and exiting {exit_codes.RESUMABLE} "
                              "(resumable)")
        self._save()
        self._skip_summary(finished=False)
        return exit_codes.RESUMABLE

    def train(self, stop: StopRequest | None = None) -> int:
        """Train to ``schedule.train_iters``; returns an ``exit_codes`` value."""
        cfg = self.cfg
        owns_stop = stop is None
        stop = stop or StopRequest(cfg.schedule.exit_duration_minutes)
        try:
            self._maybe_load()
            if not cfg.checkpoint.save:
                self.reporter.message(" checkpoint.save is not set: this run saves no checkpoint")
            if self.iteration >= cfg.schedule.train_iters:
                self.reporter.message(
                    f" already complete: the checkpoint is at iteration {self.iteration} and schedule.train_iters="
                    f"{cfg.schedule.train_iters}; nothing to train (raise schedule.train_iters to continue)")
                return exit_codes.FINISHED
            start_iteration = self.iteration
            while self.iteration < cfg.schedule.train_iters:
                start = time.time()
                batches = self._micro_batches(self.data.train, self.consumed_samples)
                result = self.backend.train_step(batches, self.iteration + 1, cfg.nan_policy)
                self.iteration += 1
                self.consumed_samples += cfg.batch.global_batch_size
                if not result["finite"] and cfg.nan_policy == "stop":
                    raise NonFiniteLossError(
                        f"iteration {self.iteration}: non-finite training step (lm loss {result['lm loss']}, "
                        f"grad norm {result['grad-norm']}); nan_policy=stop. Set nan_policy=skip to skip such steps."
                    )
                self.skipped += 0 if result["finite"] else 1
                self.learning_rate = result["learning-rate"]
                elapsed = time.time() - start
                tokens_per_sec = cfg.batch.global_batch_size * self.run.seq_length / elapsed
                tflops = self.flops_per_token * tokens_per_sec / dist.get_world_size() / 1e12
                self.reporter.step(
                    self.iteration,
                    {
                        "lm loss": result["lm loss"],
                        "grad-norm": result["grad-norm"],
                        "learning-rate": result["learning-rate"],
                        "iteration-time": elapsed,
                        "batch-size": float(cfg.batch.global_batch_size),
                        "throughput/tokens-per-sec": tokens_per_sec,
                        "throughput": tflops,
                        "mfu": tflops / self.peak if self.peak else None,
                        "skipped": 0.0 if result["finite"] else 1.0,
                    },
                    self.consumed_samples,
                    self.run.num_micro_batches,
                )
                if cfg.eval.interval and self.iteration % cfg.eval.interval == 0:
                    self._validate()
                interval = cfg.checkpoint.save_interval
                if interval and self.iteration % interval == 0 and self.iteration < cfg.schedule.train_iters:
                    self._save()
                # After the step, as Megatron-LM checks --exit-duration-in-mins: every attempt makes progress
                # even when start-up alone outlasts the budget; a request during the last step just finishes.
                reason = stop.agreed()
                if reason and self.iteration < cfg.schedule.train_iters:
                    return self._stop_early(reason, start_iteration)
            if not cfg.eval.interval or self.iteration % cfg.eval.interval:
                self._validate()
            self._save()
            self._skip_summary(finished=True)
            return exit_codes.FINISHED
        finally:
            if owns_stop:
                stop.restore()
            self.reporter.close()


def run(cfg: TrainingConfig) -> int:
    """One training run as ``emo-pretrain`` does it; returns an ``exit_codes`` value.

    The config is resolved once, on the launcher's world size, and checked to fit, before any process group or
    device work. The stop handlers go in first, so SIGTERM/SIGUSR1 during start-up (data, model) is honoured at
    step one. Process groups are torn down only if this run created them (an embedding program may own them).
    """
    stop = StopRequest(cfg.schedule.exit_duration_minutes)
    owns_process_group = not dist.is_initialized()
    try:
        resolved = resolve(cfg, launch_env().world_size)
        check_fits(resolved)
        return Trainer(resolved).train(stop)
    finally:
        stop.restore()
        if owns_process_group:
            shutdown()
