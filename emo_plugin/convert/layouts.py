"""How one Megatron tensor slice and its Hugging Face tensors hold the same numbers, in both directions.

Each layout is a pair of inverse functions: ``split`` turns the Megatron slice into the HF tensors of one
weight-map unit, ``merge`` turns them back. ``slots`` is the number of Hugging Face experts the unit spans (1
except for the shared experts, which Megatron packs into one MLP of width slots × ffn); the HF tensors are
ordered expert by expert, in the order of the row's HF names. ``description`` is the row's entry in the rendered
weight map (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensors = list[torch.Tensor]


@dataclass(frozen=True)
class Layout:
    description: str
    split: Callable[[torch.Tensor, object, int], Tensors]
    merge: Callable[[Tensors, object, int], torch.Tensor]


def _query_groups(record) -> tuple[int, int, int]:
    groups = record.num_query_groups
    return groups, record.num_attention_heads // groups, record.head_dim


def _split_qkv(qkv: torch.Tensor, record, slots: int) -> Tensors:
    groups, per_group, d = _query_groups(record)
    grouped = qkv.reshape(groups, per_group + 2, d, -1)
    q = grouped[:, :per_group].reshape(groups * per_group * d, -1)
    return [q, grouped[:, per_group].reshape(groups * d, -1), grouped[:, per_group + 1].reshape(groups * d, -1)]


def _merge_qkv(tensors: Tensors, record, slots: int) -> torch.Tensor:
    groups, _, d = _query_groups(record)
    q, k, v = (t.reshape(groups, -1, d, t.shape[-1]) for t in tensors)
    return torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])


def _split_swiglu_fc1(fc1: torch.Tensor, record, slots: int) -> Tensors:
    gates, ups = (half.chunk(slots, dim=0) for half in fc1.chunk(2, dim=0))
    return [t for pair in zip(gates, ups) for t in pair]


def _merge_swiglu_fc1(tensors: Tensors, record, slots: int) -> torch.Tensor:
    return torch.cat(tensors[0::2] + tensors[1::2], dim=0)


def _split_columns(fc2: torch.Tensor, record, slots: int) -> Tensors:
    return list(fc2.chunk(slots, dim=1))


def _merge_columns(tensors: Tensors, record, slots: int) -> torch.Tensor:
    return torch.cat(tensors, dim=1)


def _router_to_gate(router: torch.Tensor, record, slots: int) -> Tensors:
    routed = router[: record.num_selectable_experts]
    return [torch.cat([routed, routed.new_zeros(record.num_shared_experts, record.hidden_size)])]


def _gate_to_router(tensors: Tensors, record, slots: int) -> torch.Tensor:
    routed = tensors[0][: record.num_selectable_experts]
    return torch.cat([routed, routed.new_zeros(record.num_inert_experts, record.hidden_size)])


SAME = Layout("the same tensor", lambda t, record, slots: [t], lambda tensors, record, slots: tensors[0])
QKV = Layout("rows grouped per query group: [its q heads; k; v], head_dim rows each", _split_qkv, _merge_qkv)
SWIGLU_FC1 = Layout(
    "rows [gate of every slot; up of every slot] (SwiGLU fc1 = [gate; up])", _split_swiglu_fc1, _merge_swiglu_fc1
)
COLUMNS = Layout("columns [down of every slot]", _split_columns, _merge_columns)
ROUTER = Layout(
    "Megatron rows = R routed + inert (zeros); HF rows = R routed + shared (zeros: shared experts have weight 1)",
    _router_to_gate,
    _gate_to_router,
)
