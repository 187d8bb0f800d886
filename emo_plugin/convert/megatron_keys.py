"""Megatron's global sharded keys of an EMO GPTModel and their global shapes.

These are the keys of ``GPTModel.sharded_state_dict()`` (identical for the local and the Transformer Engine
spec, and for any TP/EP/PP layout): per-layer tensors carry a leading layer axis, expert tensors a layer and
an expert axis. convert/weight_map.py pairs each with its Hugging Face names; convert/layouts.py says how the
rows inside are laid out.
"""

from __future__ import annotations

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


def global_shapes(record) -> dict[str, tuple[int, ...]]:
    L, H, F, V = record.num_layers, record.hidden_size, record.moe_ffn_hidden_size, record.vocab_size
    E, S = record.num_moe_experts, record.num_shared_experts
    qkv_rows = (record.num_attention_heads + 2 * record.num_query_groups) * record.head_dim
    shapes = {
        EMBEDDING: (V, H),
        OUTPUT: (V, H),
        FINAL_NORM: (H,),
        QKV: (L, qkv_rows, H),
        PROJ: (L, H, record.num_attention_heads * record.head_dim),
        INPUT_NORM: (L, H),
        MLP_NORM: (L, H),
        ROUTER: (L, E, H),
        EXPERT_FC1: (L, E, 2 * F, H),
        EXPERT_FC2: (L, E, H, F),
    }
    if S:
        shapes.update({SHARED_FC1: (L, 2 * S * F, H), SHARED_FC2: (L, H, S * F)})
    return shapes
