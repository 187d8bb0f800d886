"""Named model sizes (torchtitan style): one ``ModelRecord`` per name, nothing else.

Training configs pick one by name (``model.size``) and may override single fields
(``emo_plugin.model.run_config``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord, typed_value

_EMO_1B14B = ModelRecord(
    # AI2's EMO-1B/14B: OLMoE-1B-7B shape, 127 routed + 1 shared expert (128 in AI2's and Hugging Face's count),
    # k = 8 incl. the shared expert, MHA, RMSNorm 1e-6, no QK norm, RoPE θ 500k, vocab 100352 (padded).
    num_layers=16,
    hidden_size=2048,
    num_attention_heads=16,
    num_query_groups=16,
    num_moe_experts=127,
    moe_router_topk=7,
    moe_ffn_hidden_size=1024,
    vocab_size=100_352,
    seq_length=4096,
    pool_min=8,
    pool_max=128,
    pool_eval=32,
)

SIZES: dict[str, ModelRecord] = {
    # CPU / CI: trains in minutes on two cores.
    "tiny": ModelRecord(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=4,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=64,
        vocab_size=4096,
        seq_length=128,
        pool_min=2,
        pool_max=8,
        pool_eval=4,
        max_documents_per_sequence=64,
    ),
    # One-GPU smoke test of the GPU path (TE, grouped GEMM, alltoall).
    "small": ModelRecord(
        num_layers=8,
        hidden_size=512,
        num_attention_heads=8,
        num_query_groups=8,
        num_moe_experts=32,
        moe_router_topk=4,
        moe_ffn_hidden_size=512,
        vocab_size=32_768,
        seq_length=1024,
        pool_min=4,
        pool_max=32,
        pool_eval=8,
    ),
    "emo_1b14b": _EMO_1B14B,
    # The matched standard MoE: same shape, pools never restrict (pool ≥ routed experts).
    "stdmoe_1b14b": dataclasses.replace(_EMO_1B14B, pool_min=128, pool_max=128, pool_eval=128),
}


def sized_record(size: str, overrides: Mapping[str, Any], source: str = "model record") -> ModelRecord:
    """The named size with single fields overridden (``None`` values keep the size's)."""
    if size not in SIZES:
        raise ConfigError(f"{source}: model.size={size!r}: unknown model size; known sizes: {', '.join(SIZES)}")
    base = SIZES[size]
    unknown = sorted(set(overrides) - set(base.to_dict()))
    if unknown:
        raise ConfigError(f"{source}: unknown model record field(s) {unknown}; known: {sorted(base.to_dict())}")
    changes = {name: typed_value(name, value, source) for name, value in overrides.items() if value is not None}
    return dataclasses.replace(base, **changes)
