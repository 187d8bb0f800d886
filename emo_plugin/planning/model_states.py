"""Bytes of parameters, gradients and optimizer state on one rank, per training backend.

GPU (``MegatronBackend``): parameters in the compute dtype; Megatron DDP's contiguous gradient buffer in fp32
because the backend sets ``DistributedDataParallelConfig(grad_reduce_in_fp32=True)``; Adam keeps an fp32 main
copy of bf16 parameters (none for fp32 parameters: the distributed optimizer uses the parameter itself) and two
fp32 moments. With the distributed optimizer (ZeRO-1) that state is sharded: dense over DP × CP, experts over
expert-DP (Megatron-Core ``distributed_optimizer.py``; the "6 + 12/d bytes per parameter" of its docs).
CPU (``HostBackend``): fp32 parameters, ``.grad`` tensors and ``torch.optim.AdamW``'s two moments, unsharded.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo_plugin.planning.parameters import ParameterCount
from emo_plugin.run.layout import Layout

GRAD_REDUCE_IN_FP32 = True  # what emo_plugin/training/megatron_backend.py passes to DistributedDataParallelConfig
FP32 = 4


@dataclass(frozen=True)
class ModelStates:
    parameters: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer


def model_states(params: ParameterCount, layout: Layout, *, backend: str, param_bytes: int,
                 distributed_optimizer: bool) -> ModelStates:
    """Bytes on one rank holding ``params``; ``backend`` is 'megatron' (GPU) or 'host' (CPU)."""
    if backend == "host":
        return ModelStates(params.total * FP32, params.total * FP32, params.total * 2 * FP32)
    grad_bytes = FP32 if GRAD_REDUCE_IN_FP32 else param_bytes
    state_bytes = 2 * FP32 + (FP32 if param_bytes != FP32 else 0)  # moments (+ fp32 main params)
    if distributed_optimizer:
        dense = -(-params.dense * state_bytes // layout.dense_grad_group)
        optimizer = dense + -(-params.expert * state_bytes // layout.expert_dp)
    else:
        optimizer = params.total * state_bytes
    return ModelStates(params.total * param_bytes, params.total * grad_bytes, optimizer)
