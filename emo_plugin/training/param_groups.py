"""Optimizer parameter groups: no weight decay on embeddings, norms and biases (OLMo / Megatron practice).

The rule is ``no_weight_decay``; both backends express it as Megatron's ``wd_mult`` (0 or 1) per group, which
``OptimizerParamScheduler`` (schedule.py) multiplies into the scheduled weight decay: the host path through
``parameter_groups``, the GPU path through ``megatron_overrides`` handed to ``get_megatron_optimizer``.
"""

from __future__ import annotations

import torch
from megatron.core.optimizer import ParamGroupOverride, ParamKey, ParamWithNamePredicate


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.ndim < 2 or "embedding" in name or "norm" in name or name.endswith(".bias")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "wd_mult": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "wd_mult": 0.0},
    ]


def megatron_overrides() -> dict:
    """``config_overrides`` for ``get_megatron_optimizer``: ``wd_mult=0`` wherever ``no_weight_decay`` holds."""
    key = ParamKey(with_name_predicate=ParamWithNamePredicate(name="emo_no_wd", fn=lambda p, n: no_weight_decay(n, p)))
    return {key: ParamGroupOverride(wd_mult=0.0)}
