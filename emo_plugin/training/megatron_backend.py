"""The GPU training step: Megatron-Core's own machinery, nothing re-implemented.

``DistributedDataParallel`` (grad buffers, reduce over DP / expert-DP, optional overlap), ``get_megatron_optimizer``
(distributed optimizer, fp32 main params, grad clipping), ``OptimizerParamScheduler`` (lr and weight decay with
``wd_mult``, schedule.py), ``get_forward_backward_func`` (no pipelining / 1F1B / interleaved 1F1B over model
chunks, which also sets the MoE aux-loss scale), ``finalize_model_grads`` (DP/SP/embedding grad sync and the EMO
routers' per-step reset through ``reset_model_temporary_tensors``), Transformer Engine layers unless
``model.transformer_impl=local``. Seeds, optimizer sharding metadata and the hook/sync wiring follow Megatron-LM
(``megatron/training``). The CPU suite runs this file unmodified on gloo ranks (tests/cuda_free/).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_batch_on_this_cp_rank

from emo_plugin.megatron_compat import sync_overlapped_params, torch_optimizers
from emo_plugin.model.build import build_emo_gpt_model
from emo_plugin.run.resolve import ResolvedRun
from emo_plugin.training.anneal import AnnealStart
from emo_plugin.training.host_backend import forward, lm_loss
from emo_plugin.training.param_groups import megatron_overrides
from emo_plugin.training.schedule import param_scheduler, set_iteration

_SCHEDULER_KEY = "opt_param_scheduler"


def seed_like_megatron_lm(seed: int) -> int:
    """Megatron-LM's ``_set_random_seed``: every pipeline stage gets ``seed + 100 × pp_rank`` (host RNGs and the
    CUDA RNG tracker's data/tensor/expert-parallel streams), so stages do not draw identical initialisations."""
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    tensor_parallel.model_parallel_cuda_manual_seed(stage_seed)
    return stage_seed


def sharded_state_dict_metadata() -> dict:
    """What Megatron-LM passes to ``sharded_state_dict`` (``_build_sharded_state_dict_metadata``): without it the
    distributed optimizer falls back to the deprecated ``fully_sharded_model_space`` format, which 0.19 refuses.
    ``dp_reshardable`` (Megatron-LM's default): fully parallel save/load, resumable at another data-parallel size;
    0.19's ``fully_reshardable`` cannot load torch Adam's per-parameter ``step`` (no TE/Apex optimizer)."""
    return {
        "distrib_optim_sharding_type": "dp_reshardable",
        "singleton_local_shards": False,
        "chained_optim_avoid_prefix": True,
        "dp_cp_group": parallel_state.get_data_parallel_group(with_context_parallel=True),
    }


def context_parallel_share(micro_batch: dict) -> dict:
    """This CP rank's part of a micro-batch: Megatron's zigzag split of every [b, s] tensor (routing ids included);
    packed thd rows arrive already split per CP rank (packed_sequences.py)."""
    if parallel_state.get_context_parallel_world_size() == 1 or "packed_seq_params" in micro_batch:
        return micro_batch
    cp_group = parallel_state.get_context_parallel_group()
    return get_batch_on_this_cp_rank(micro_batch, is_hybrid_cp=False, cp_group=cp_group)


def schedule_seq_length(micro_batch: dict, seq_length: int) -> int:
    """The ``seq_length`` Megatron's schedules take: the full sequence, which they divide by CP (and by TP under
    SP) for the p2p activation shape; a packed thd row holds this CP rank's share of the micro-batch's tokens."""
    if "packed_seq_params" in micro_batch:
        return micro_batch["tokens"].shape[1] * parallel_state.get_context_parallel_world_size()
    return seq_length


def _build_chunks(run: ResolvedRun) -> list:
    """This rank's model chunks: one per virtual pipeline stage (interleaved schedule), else one."""
    vpp = run.config.parallel.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vpp) if vpp else [None]:
        chunk = build_emo_gpt_model(
            run.transformer_config,
            vocab_size=run.vocab_size,
            max_sequence_length=run.seq_length,
            use_transformer_engine=run.transformer_engine,
            rotary_base=run.record.rotary_base,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            vp_stage=vp_stage,
        )
        chunks.append(chunk.cuda(torch.cuda.current_device()))
    return chunks


def _one_or_list(items: list):
    return items[0] if len(items) == 1 else items


class MegatronBackend:
    save_strategy = None  # Megatron's default torch_dist strategy (async-capable writer, fine on CUDA)

    def __init__(self, run: ResolvedRun, *, anneal: AnnealStart | None = None):
        cfg, transformer_config = run.config, run.transformer_config
        self.cfg, self.seq_length = cfg, run.seq_length
        seed_like_megatron_lm(cfg.seed)
        opt = cfg.optimizer
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            use_distributed_optimizer=opt.use_distributed_optimizer,
            overlap_grad_reduce=opt.overlap_grad_reduce,
            overlap_param_gather=opt.overlap_param_gather,
        )
        self.model = [
            DistributedDataParallel(
                config=transformer_config, ddp_config=ddp_config, module=chunk, disable_bucketing=index > 0
            )
            for index, chunk in enumerate(_build_chunks(run))
        ]
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=opt.lr,
                min_lr=opt.min_lr,
                weight_decay=opt.weight_decay,
                adam_beta1=opt.adam_beta1,
                adam_beta2=opt.adam_beta2,
                adam_eps=opt.adam_eps,
                clip_grad=opt.clip_grad,
                bf16=transformer_config.bf16,
                params_dtype=transformer_config.params_dtype,
                use_distributed_optimizer=opt.use_distributed_optimizer,
            ),
            self.model,
            config_overrides=megatron_overrides(),
        )
        self.scheduler = param_scheduler(self.optimizer, opt, cfg.schedule, anneal)
        # Megatron-LM's wiring (training.py, setup_model_and_optimizer / train).
        transformer_config.finalize_model_grads_func = finalize_model_grads
        transformer_config.grad_scale_func = self.optimizer.scale_loss
        if opt.overlap_grad_reduce:
            transformer_config.no_sync_func = _one_or_list([m.no_sync for m in self.model])
            transformer_config.grad_sync_func = _one_or_list([m.start_grad_sync for m in self.model])
        if opt.overlap_param_gather:
            transformer_config.param_sync_func = _one_or_list([m.start_param_sync for m in self.model])

    # -- forward / backward ---------------------------------------------------------------------------
    def _run(self, micro_batches: list[dict], forward_only: bool) -> torch.Tensor:
        batches = [context_parallel_share(b) for b in micro_batches]

        def forward_step(data_iterator, model):
            batch = next(data_iterator)
            output = forward(model, batch)

            def loss_func(loss_BS):
                loss = lm_loss(loss_BS, batch["loss_mask"])
                # clone: the schedule scales the returned loss in place (÷ micro-batches × CP) for backward
                return loss, {"lm loss": loss.detach().clone()}

            return output, loss_func

        store = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=_one_or_list([iter(batches) for _ in self.model]),  # each chunk sees every micro-batch
            model=self.model,
            num_microbatches=len(micro_batches),
            seq_length=schedule_seq_length(micro_batches[0], self.seq_length),
            micro_batch_size=micro_batches[0]["tokens"].shape[0],
            forward_only=forward_only,
        )
        loss = torch.zeros(1, device="cuda")
        if parallel_state.is_pipeline_last_stage():
            loss += torch.stack([s["lm loss"] for s in store]).mean()
            dist.all_reduce(loss, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
            loss /= parallel_state.get_data_parallel_world_size(with_context_parallel=True)
        dist.all_reduce(loss, group=parallel_state.get_pipeline_model_parallel_group())  # to every stage
        return loss

    def train_step(self, micro_batches: list[dict], iteration: int, nan_policy: str) -> dict:
        """One optimizer step producing ``iteration``; a non-finite loss or gradient never reaches the weights."""
        for chunk in self.model:
            chunk.train()
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        lr = set_iteration(self.scheduler, iteration)
        loss = self._run(micro_batches, forward_only=False)
        # Without a loss scaler Megatron's optimizer steps on NaN/inf gradients, so look before it steps
        # (prepare_grads only copies the reduced grads into the main grads; step() repeats it harmlessly).
        self.optimizer.prepare_grads()
        grad_norm = float(self.optimizer.get_grad_norm())
        finite = bool(torch.isfinite(loss).all()) and np.isfinite(grad_norm)
        if finite:
            ok, _, _ = self.optimizer.step()
            finite = bool(ok)
        return {"lm loss": loss.item(), "grad-norm": grad_norm, "finite": finite, "learning-rate": lr}

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[dict]) -> float:
        self._sync_params()
        for chunk in self.model:
            chunk.eval()
        loss = self._run(micro_batches, forward_only=True).item()
        for chunk in self.model:
            chunk.train()
        return loss

    def _sync_params(self) -> None:
        """Evaluation and saving need current weights, not those of the next forward's overlapped gather."""
        for chunk in self.model:
            sync_overlapped_params(chunk)

    # -- checkpoint state -----------------------------------------------------------------------------
    def _model_keys(self) -> list[str]:
        """Megatron-LM's names: ``model``, or ``model0``, ``model1``, ... for virtual pipeline chunks."""
        return ["model"] if len(self.model) == 1 else [f"model{i}" for i in range(len(self.model))]

    def _model_sharded_state_dict(self, metadata: dict) -> dict:
        return {
            key: chunk.module.sharded_state_dict(prefix="", metadata=metadata)
            for key, chunk in zip(self._model_keys(), self.model)
        }

    def _materialize_optimizer_state(self) -> None:
        """Megatron's optimizer checkpoint layouts describe existing Adam state, which torch's Adam only creates
        at its first step (a fresh run's load otherwise fails in ``DistributedOptimizer.state_dict``). Take that
        step with zero gradients, learning rate and weight decay, as Megatron does before its fsdp_dtensor loads:
        no parameter moves, and the load then overwrites the state."""
        for inner in torch_optimizers(self.optimizer):
            if inner.state:
                continue
            saved = [(group["lr"], group["weight_decay"]) for group in inner.param_groups]
            for group in inner.param_groups:
                group["lr"], group["weight_decay"] = 0.0, 0.0
                for param in group["params"]:
                    param.grad = torch.zeros_like(param)
            inner.step()
            inner.zero_grad()
            for group, (lr, weight_decay) in zip(inner.param_groups, saved):
                group["lr"], group["weight_decay"] = lr, weight_decay

    def _restore_adam_steps(self) -> None:
        """torch's Adam counts steps per parameter; without TE/Apex Megatron checkpoints that count once per param
        group, and the dp_reshardable load then copies the load template's per-parameter count (the step taken
        by ``_materialize_optimizer_state``) back over it. Put the checkpoint's count back, so the bias
        correction of the next step is the uninterrupted run's."""
        for inner in torch_optimizers(self.optimizer):
            for group in inner.param_groups:
                if group.get("step") is None:
                    continue
                for param in group["params"]:
                    state = inner.state.get(param, {})
                    if torch.is_tensor(state.get("step")):
                        state["step"] = torch.tensor(float(group["step"]), dtype=state["step"].dtype)

    def sharded_state_dict(self, is_loading: bool = False, include_rng: bool = True) -> dict:
        if is_loading:
            self._materialize_optimizer_state()
        else:
            self._sync_params()
        metadata = sharded_state_dict_metadata()
        state = self._model_sharded_state_dict(metadata)
        state["optimizer"] = self.optimizer.sharded_state_dict(state, is_loading=is_loading, metadata=metadata)
        return state

    def common_state(self) -> dict:
        return {_SCHEDULER_KEY: self.scheduler.state_dict()}

    @torch.no_grad()  # Megatron-LM loads under no_grad: the fp32 distributed optimizer copies into leaf views
    def load_state(self, loaded: dict, common: dict) -> None:
        for key, chunk in zip(self._model_keys(), self.model):
            chunk.module.load_state_dict(loaded[key])
        self.optimizer.load_state_dict(loaded["optimizer"])
        self._restore_adam_steps()
        if _SCHEDULER_KEY in common:
            self.scheduler.load_state_dict(common[_SCHEDULER_KEY])

    def model_sharded_state_dict(self) -> dict:
        """The model part alone, for a weights-only load (``checkpoint.finetune``, tools/import_hf.py output)."""
        return self._model_sharded_state_dict(sharded_state_dict_metadata())

    @torch.no_grad()
    def load_weights(self, loaded: dict) -> None:
        """Model weights only; the optimizer's main params are refreshed from them (Megatron-LM's finetune load)."""
        for key, chunk in zip(self._model_keys(), self.model):
            chunk.module.load_state_dict(loaded[key])
        self.optimizer.reload_model_params()
