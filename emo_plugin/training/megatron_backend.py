"""The GPU training step: Megatron-Core's own machinery, nothing re-implemented.

``DistributedDataParallel`` (grad buffers, reduce over DP / expert-DP), ``get_megatron_optimizer`` (distributed
optimizer, fp32 main params, grad clipping), ``get_forward_backward_func`` (no-pipelining / 1F1B / interleaved,
which also sets the MoE aux-loss scale), ``finalize_model_grads`` (DP/SP/embedding grad sync and the EMO routers'
per-step reset through ``reset_model_temporary_tensors``), Transformer Engine layers when installed.
Written for NCCL + CUDA; not exercised by the CPU test suite.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer.optimizer_config import ParamGroupOverride, ParamKey, ParamWithNamePredicate
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.utils import get_batch_on_this_cp_rank

from emo_plugin.model import build_emo_gpt_model
from emo_plugin.training.host_backend import forward, lm_loss
from emo_plugin.training.param_groups import no_weight_decay

try:
    import transformer_engine  # noqa: F401

    HAVE_TE = True
except ImportError:
    HAVE_TE = False


class MegatronBackend:
    save_strategy = None  # Megatron's default torch_dist strategy (async-capable writer, fine on CUDA)

    def __init__(self, cfg, transformer_config, *, vocab_size: int, seq_length: int):
        self.cfg, self.seq_length = cfg, seq_length
        tensor_parallel.model_parallel_cuda_manual_seed(cfg.seed)
        model = build_emo_gpt_model(
            transformer_config,
            vocab_size=vocab_size,
            max_sequence_length=seq_length,
            use_transformer_engine=HAVE_TE,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(),
        )
        model.cuda(torch.cuda.current_device())
        opt = cfg.optimizer
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            use_distributed_optimizer=opt.use_distributed_optimizer,
            overlap_grad_reduce=False,
        )
        self.model = DistributedDataParallel(config=transformer_config, ddp_config=ddp_config, module=model)
        no_wd = ParamKey(with_name_predicate=ParamWithNamePredicate(name="emo_no_wd", fn=lambda p, n: no_weight_decay(n, p)))
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
            [self.model],
            config_overrides={no_wd: ParamGroupOverride(wd_mult=0.0)},
        )
        transformer_config.finalize_model_grads_func = finalize_model_grads
        transformer_config.grad_scale_func = self.optimizer.scale_loss
        transformer_config.no_sync_func = self.model.no_sync

    def _run(self, micro_batches: list[dict], forward_only: bool) -> torch.Tensor:
        cp = parallel_state.get_context_parallel_world_size()
        batches = iter([get_batch_on_this_cp_rank(b) if cp > 1 else b for b in micro_batches])

        def forward_step(data_iterator, model):
            batch = next(data_iterator)
            output = forward(model, batch)

            def loss_func(loss_BS):
                loss = lm_loss(loss_BS, batch["loss_mask"])
                return loss, {"lm loss": loss.detach()}

            return output, loss_func

        store = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=batches,
            model=[self.model],
            num_microbatches=len(micro_batches),
            seq_length=self.seq_length // cp,
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

    def train_step(self, micro_batches: list[dict], lr: float, nan_policy: str) -> dict:
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss = self._run(micro_batches, forward_only=False)
        finite = bool(torch.isfinite(loss).all())
        grad_norm = float("nan")
        if finite:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            ok, grad_norm, _ = self.optimizer.step()
            finite = bool(ok) and grad_norm is not None and bool(torch.isfinite(torch.tensor(grad_norm)))
        return {"lm loss": loss.item(), "grad-norm": float(grad_norm or 0.0), "finite": finite}

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[dict]) -> float:
        self.model.eval()
        loss = self._run(micro_batches, forward_only=True).item()
        self.model.train()
        return loss

    def sharded_state_dict(self, is_loading: bool = False, include_rng: bool = True) -> dict:
        model_sd = self.model.module.sharded_state_dict(prefix="")
        return {"model": model_sd, "optimizer": self.optimizer.sharded_state_dict(model_sd, is_loading=is_loading)}

    def common_state(self) -> dict:
        return {}

    def load_state(self, loaded: dict, common: dict) -> None:
        self.model.module.load_state_dict(loaded["model"])
        self.optimizer.load_state_dict(loaded["optimizer"])

    def model_sharded_state_dict(self) -> dict:
        """The model part alone, for a weights-only load (``checkpoint.finetune``, tools/import_hf.py output)."""
        return {"model": self.model.module.sharded_state_dict(prefix="")}

    @torch.no_grad()
    def load_weights(self, loaded: dict) -> None:
        """Model weights only; the optimizer's main params are refreshed from them (Megatron-LM's finetune load)."""
        self.model.module.load_state_dict(loaded["model"])
        self.optimizer.reload_model_params()
