"""The host (CPU, gloo) training step: the same EMO GPTModel, a plain PyTorch loop.

Megatron's DDP, optimizer and schedules are CUDA-only in megatron-core 0.19.2 (docs/architecture.md, "Megatron
boundary"), so the host path does by hand, visibly, what they do on GPU:

* loss = mean over micro-batches of the token-mean LM loss; ``MoEAuxLossAutoScaler.set_loss_scale(1/M)`` so the
  routers' load-balancing and z-loss gradients get the same 1/M (what Megatron's schedules set);
* gradients summed over the data-parallel group (expert parameters over the expert-data-parallel group) and
  scaled by 1/dp — ``DistributedDataParallel``'s factors;
* global grad norm (expert shards summed over expert-parallel ranks), clipping, ``torch.optim.AdamW``;
* once per step, the routers' per-step load-balancing state is reset (``finalize_model_grads`` does this on GPU).

Checkpoints: model ``sharded_state_dict`` + AdamW moments as sharded tensors shaped like their parameters
(``dist_checkpointing.optimizer``), so a host checkpoint loads under another EP/DP layout.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.optimizer import (
    get_param_id_to_sharded_param_map,
    optim_state_to_sharding_state,
)
from megatron.core.transformer.moe.moe_utils import MoEAuxLossAutoScaler

from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
from emo_plugin.megatron_compat import is_expert_parameter
from emo_plugin.model.build import build_emo_gpt_model
from emo_plugin.run.resolve import ResolvedRun
from emo_plugin.training.anneal import AnnealStart
from emo_plugin.training.param_groups import parameter_groups
from emo_plugin.training.schedule import param_scheduler, set_iteration


def lm_loss(loss_BS: torch.Tensor, loss_mask_BS: torch.Tensor) -> torch.Tensor:
    mask = loss_mask_BS.float()
    return (loss_BS.float() * mask).sum() / mask.sum().clamp_min(1)


def forward(model, batch: dict) -> torch.Tensor:
    """Per-token LM loss [b, s]; routing ids travel as ``padding_mask`` (routing_ids.py)."""
    return model(
        batch["tokens"],
        batch["position_ids"],
        batch.get("attention_mask"),
        labels=batch["labels"],
        padding_mask=batch["routing_ids"],
        packed_seq_params=batch.get("packed_seq_params"),  # thd intra-document attention on GPU
    )


class HostBackend:
    save_strategy = HostTorchDistSaveStrategy()

    def __init__(self, run: ResolvedRun, *, anneal: AnnealStart | None = None):
        cfg = run.config
        self.cfg = cfg
        self.model = build_emo_gpt_model(
            run.transformer_config,
            vocab_size=run.vocab_size,
            max_sequence_length=run.seq_length,
            use_transformer_engine=False,
            host_execution=True,
            rotary_base=run.record.rotary_base,
        )
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, opt.weight_decay),
            lr=opt.lr,
            betas=(opt.adam_beta1, opt.adam_beta2),
            eps=opt.adam_eps,
            foreach=False,
        )
        self._init_optimizer_state()
        self.scheduler = param_scheduler(self.optimizer, opt, cfg.schedule, anneal)
        self.dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        self.expert_dp_group = parallel_state.get_expert_data_parallel_group()
        self.ep_group = parallel_state.get_expert_model_parallel_group()
        self.routers = [m for m in self.model.modules() if hasattr(m, "reset_global_aux_loss_tracker")]

    def _init_optimizer_state(self) -> None:
        """Zero moments before the first step, so a checkpoint's optimizer layout exists from step 0."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                self.optimizer.state[p] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }

    # -- one optimizer step ---------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict], iteration: int, nan_policy: str) -> dict:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)
        lr = set_iteration(self.scheduler, iteration)
        num_micro = len(micro_batches)
        MoEAuxLossAutoScaler.set_loss_scale(torch.ones(1) / num_micro)
        total = torch.zeros(1)
        for batch in micro_batches:
            loss = lm_loss(forward(self.model, batch), batch["loss_mask"])
            (loss / num_micro).backward()
            total += loss.detach() / num_micro
        for router in self.routers:
            router.reset_global_aux_loss_tracker()
        self._all_reduce_grads()
        grad_norm = self._grad_norm()
        dist.all_reduce(total, group=self.dp_group)
        total /= self.dp_group.size()
        finite = bool(torch.isfinite(total).all()) and bool(torch.isfinite(grad_norm))
        if finite:
            clip = self.cfg.optimizer.clip_grad
            if clip > 0:
                coeff = (clip / (grad_norm + 1e-6)).clamp(max=1.0)
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(coeff)
            self.optimizer.step()
        return {"lm loss": total.item(), "grad-norm": grad_norm.item(), "finite": finite, "learning-rate": lr}

    def _all_reduce_grads(self) -> None:
        scale = 1.0 / self.dp_group.size()
        for p in self.model.parameters():
            if p.grad is None:
                continue
            group = self.expert_dp_group if is_expert_parameter(p) else self.dp_group
            if group.size() > 1:
                dist.all_reduce(p.grad, group=group)
            p.grad.mul_(scale)

    def _grad_norm(self) -> torch.Tensor:
        dense = torch.zeros(1, dtype=torch.float64)
        expert = torch.zeros(1, dtype=torch.float64)
        for p in self.model.parameters():
            if p.grad is not None:
                sq = p.grad.double().pow(2).sum()
                if is_expert_parameter(p):
                    expert += sq
                else:
                    dense += sq
        if self.ep_group.size() > 1:
            dist.all_reduce(expert, group=self.ep_group)
        return (dense + expert).sqrt().float().squeeze()

    @torch.no_grad()
    def eval_loss(self, micro_batches: list[dict]) -> float:
        self.model.eval()
        total = torch.zeros(1)
        for batch in micro_batches:
            total += lm_loss(forward(self.model, batch), batch["loss_mask"]) / len(micro_batches)
        dist.all_reduce(total, group=self.dp_group)
        self.model.train()
        return (total / self.dp_group.size()).item()

    # -- checkpoint state -----------------------------------------------------------------------------
    def sharded_state_dict(self, is_loading: bool = False, include_rng: bool = True) -> dict:
        model_sd = self.model.sharded_state_dict(prefix="")
        optim_sd = self.optimizer.state_dict()
        id_map = get_param_id_to_sharded_param_map(
            model_sd, (p for g in self.optimizer.param_groups for p in g["params"])
        )
        optim_state_to_sharding_state(optim_sd, id_map, exclude_keys=("step",))
        rank, world = dist.get_rank(), dist.get_world_size()
        state = {"model": model_sd, "optimizer": optim_sd}
        if include_rng:  # per-rank host RNG; only restored under the same world size
            state["host_rng"] = ShardedObject("host_rng", torch.get_rng_state(), (world,), (rank,), replica_id=0)
        return state

    def common_state(self) -> dict:
        steps = {float(s["step"]) for s in self.optimizer.state.values()}
        return {"optimizer_step": max(steps) if steps else 0.0}

    def load_state(self, loaded: dict, common: dict) -> None:
        self.model.load_state_dict(loaded["model"])
        state = loaded["optimizer"]
        step = torch.tensor(float(common.get("optimizer_step", 0.0)))
        for param_state in state["state"].values():
            param_state["step"] = step.clone()
        state["param_groups"] = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict(state)
        if "host_rng" in loaded:
            torch.set_rng_state(loaded["host_rng"])

    def model_sharded_state_dict(self) -> dict:
        """The model part alone, for a weights-only load (``checkpoint.finetune``, tools/import_hf.py output)."""
        return {"model": self.model.sharded_state_dict(prefix="")}

    def load_weights(self, loaded: dict) -> None:
        """Model weights only: the optimizer keeps its fresh (zero-moment) state."""
        self.model.load_state_dict(loaded["model"])
