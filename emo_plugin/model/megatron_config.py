"""A model record as Megatron's ``EmoTransformerConfig``: the one place that translates the two.

The record fixes the shape and the routing recipe; what depends on how the model runs (parallel layout,
precision, initialisation, dispatcher, fusions) comes in as Megatron keyword overrides, and the router's
run settings (``lb_scope``, ``seed``) as ``router`` overrides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from emo_plugin.model.record import FIELD_TYPES as RECORD_FIELDS
from emo_plugin.model.record import ModelRecord
from emo_plugin.moe.config import EmoRouterConfig, EmoTransformerConfig


def transformer_config(record: ModelRecord, *, router: Mapping[str, Any] | None = None,
                       **overrides: Any) -> EmoTransformerConfig:
    """The Megatron config of ``record``; raises ``ConfigError`` for EMO-invalid combinations."""
    shape = dict(
        num_layers=record.num_layers,
        hidden_size=record.hidden_size,
        num_attention_heads=record.num_attention_heads,
        num_query_groups=record.num_query_groups,
        ffn_hidden_size=record.moe_ffn_hidden_size,
        num_moe_experts=record.num_moe_experts,
        moe_router_topk=record.moe_router_topk,
        moe_ffn_hidden_size=record.moe_ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=record.norm_epsilon,
        qk_layernorm=record.qk_layernorm,
        gated_linear_unit=True,  # SwiGLU experts
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        moe_router_dtype="fp32",
    )
    return EmoTransformerConfig(**(shape | overrides), emo=router_config(record, **(router or {})))


def router_config(record: ModelRecord, **router: Any) -> EmoRouterConfig:
    """The record's routing recipe as Megatron's EMO router config: every router field the record has, by name;
    ``router``: the run's settings (lb_scope, seed), which the record does not hold."""
    recipe = {f.name: getattr(record, f.name) for f in dataclasses.fields(EmoRouterConfig) if f.name in RECORD_FIELDS}
    return EmoRouterConfig(**recipe, **router)
