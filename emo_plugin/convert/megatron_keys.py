"""Megatron's global sharded keys of an EMO GPTModel and the tensor layouts behind them.

These are the keys of ``GPTModel.sharded_state_dict()`` (identical for the local and the Transformer Engine
spec, and for any TP/EP/PP layout): per-layer tensors carry a leading layer axis, expert tensors a layer and
an expert axis. Layouts (megatron_notes.md §7):

* ``linear_qkv.weight`` rows are grouped per query group: [q heads of the group; k; v], head_dim rows each.
* ``linear_fc1.weight`` of a SwiGLU MLP is the row concatenation [gate; up]; ``linear_fc2`` is down.
* the shared experts are ONE MLP of width S × ffn whose fc1 is [gate_1..gate_S; up_1..up_S].
"""

from __future__ import annotations

import torch

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
INPUT_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
MLP_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
ROUTER = "decoder.layers.mlp.router.weight"
EXPERT_FC1 = "decoder.layers.mlp.experts.experts.linear_fc1.weight"
EXPERT_FC2 = "decoder.layers.mlp.experts.experts.linear_fc2.weight"
SHARED_FC1 = "decoder.layers.mlp.shared_experts.linear_fc1.weight"
SHARED_FC2 = "decoder.layers.mlp.shared_experts.linear_fc2.weight"


def global_shapes(arch) -> dict[str, tuple[int, ...]]:
    L, H, F, V = arch.num_layers, arch.hidden_size, arch.moe_ffn_hidden_size, arch.vocab_size
    E, S = arch.num_moe_experts, arch.num_shared_experts
    qkv_rows = (arch.num_attention_heads + 2 * arch.num_query_groups) * arch.head_dim
    shapes = {
        EMBEDDING: (V, H),
        OUTPUT: (V, H),
        FINAL_NORM: (H,),
        QKV: (L, qkv_rows, H),
        PROJ: (L, H, arch.num_attention_heads * arch.head_dim),
        INPUT_NORM: (L, H),
        MLP_NORM: (L, H),
        ROUTER: (L, E, H),
        EXPERT_FC1: (L, E, 2 * F, H),
        EXPERT_FC2: (L, E, H, F),
    }
    if S:
        shapes.update({SHARED_FC1: (L, 2 * S * F, H), SHARED_FC2: (L, H, S * F)})
    return shapes


def split_qkv(qkv: torch.Tensor, arch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [heads·d, H], k and v [groups·d, H] from Megatron's per-group interleaved rows."""
    groups, d = arch.num_query_groups, arch.head_dim
    per_group = arch.num_attention_heads // groups
    grouped = qkv.reshape(groups, per_group + 2, d, -1)
    q = grouped[:, :per_group].reshape(groups * per_group * d, -1)
    return q, grouped[:, per_group].reshape(groups * d, -1), grouped[:, per_group + 1].reshape(groups * d, -1)


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch) -> torch.Tensor:
    groups, d = arch.num_query_groups, arch.head_dim
    per_group = arch.num_attention_heads // groups
    hidden = q.shape[-1]
    grouped = torch.cat(
        [q.reshape(groups, per_group, d, hidden), k.reshape(groups, 1, d, hidden), v.reshape(groups, 1, d, hidden)],
        dim=1,
    )
    return grouped.reshape(-1, hidden)


def split_gated_fc1(fc1: torch.Tensor, parts: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(gate, up)] of ``parts`` equal MLPs packed in one SwiGLU fc1 ([gate_1..gate_n; up_1..up_n])."""
    gate, up = fc1.chunk(2, dim=0)
    return list(zip(gate.chunk(parts, dim=0), up.chunk(parts, dim=0)))


def merge_gated_fc1(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([g for g, _ in pairs] + [u for _, u in pairs], dim=0)
