"""Exact parameter counts per rank, from the model size alone (no module is built).

Mirrors what ``build_emo_gpt_model`` creates on one rank of a layout: untied input embedding and output layer
(vocabulary split over TP, first / last pipeline stage), per layer an RMSNorm before attention and before the
MoE layer (replicated over TP), QKV and output projections (split over TP, no biases), optional QK norms, the
router (E × d, replicated), the shared expert(s) (SwiGLU, split over TP) and the local routed experts
(E / EP of them, SwiGLU, split over ETP); a final RMSNorm on the last stage. ``tests/planning`` checks these
counts against built models.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord
from emo_plugin.run.layout import Layout


@dataclass(frozen=True)
class ParameterCount:
    """Parameters on one rank: ``dense`` (reduced over DP × CP) and ``expert`` (reduced over expert-DP)."""

    dense: int
    expert: int

    @property
    def total(self) -> int:
        return self.dense + self.expert


def layers_per_stage(record: ModelRecord, layout: Layout) -> int:
    if record.num_layers % layout.pp:
        raise ConfigError(f"parallel.pipeline_model_parallel_size={layout.pp}: does not divide "
                          f"num_layers={record.num_layers}")
    return record.num_layers // layout.pp


def layer_parameters(record: ModelRecord, layout: Layout) -> ParameterCount:
    """One transformer layer's parameters on one rank."""
    d, tp = record.hidden_size, layout.tp
    head_dim = d // record.num_attention_heads
    qkv = (record.num_attention_heads + 2 * record.num_query_groups) * head_dim * d // tp
    proj = record.num_attention_heads * head_dim * d // tp
    qk_norms = 2 * head_dim if record.qk_layernorm else 0
    norms = 2 * d
    router = record.num_moe_experts * d
    shared = 3 * d * record.num_shared_experts * record.moe_ffn_hidden_size // tp
    local_experts = record.num_moe_experts // layout.ep
    experts = local_experts * 3 * d * record.moe_ffn_hidden_size // layout.etp
    return ParameterCount(dense=qkv + proj + qk_norms + norms + router + shared, expert=experts)


def stage_parameters(record: ModelRecord, vocab_size: int, layout: Layout, stage: int) -> ParameterCount:
    """Parameters of one rank on pipeline stage ``stage`` (0 = first)."""
    layer = layer_parameters(record, layout)
    layers = layers_per_stage(record, layout)
    dense, expert = layers * layer.dense, layers * layer.expert
    vocab_shard = vocab_size // layout.tp * record.hidden_size
    if stage == 0:
        dense += vocab_shard  # input embedding
    if stage == layout.pp - 1:
        dense += vocab_shard + record.hidden_size  # output layer (untied) + final norm
    return ParameterCount(dense=dense, expert=expert)


def model_parameters(record: ModelRecord, vocab_size: int) -> int:
    """All parameters of the model (one rank, no parallelism)."""
    return stage_parameters(record, vocab_size, Layout(world_size=1), 0).total
