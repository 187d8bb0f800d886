"""The model record of a training run config: ``model.size`` plus the ``model.*``, ``emo.*`` and
``data.seq_length`` fields that override single record fields.

Works on the plain mapping form of the config (a YAML file, or what the trainer stores in a checkpoint's
``common["config"]``), so that reading a run's model needs no training code. Fields of those sections that
only concern training (``model.init_method_std``, ``emo.lb_scope``, ...) are not part of the model and are
ignored here.
"""

from __future__ import annotations

from typing import Any, Mapping

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.sizes import sized_record

MODEL_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "num_moe_experts",
                "moe_router_topk", "moe_ffn_hidden_size", "vocab_size", "rotary_base")
"""Record fields a run config overrides in its ``model`` section."""
EMO_FIELDS = ("pool_min", "pool_max", "pool_eval", "pool_min_per_layer", "pool_max_per_layer", "pool_max_ranks",
              "pool_rank_groups", "eos_grouping", "num_shared_experts", "num_inert_experts", "lb_coeff",
              "z_loss_coeff", "max_documents_per_sequence")
"""Record fields a run config overrides in its ``emo`` section."""


def _section(values: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    section = values.get(name) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(section).__name__}")
    return section


def record_of_run_config(values: Mapping[str, Any], source: str = "training config") -> ModelRecord:
    """The record a run with config ``values`` trains (before the tokenizer fixes vocabulary and token ids)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: expected a mapping of config sections, got {type(values).__name__}")
    model, emo, data = (_section(values, name, source) for name in ("model", "emo", "data"))
    overrides = {name: model.get(name) for name in MODEL_FIELDS}
    overrides.update({name: emo.get(name) for name in EMO_FIELDS})
    overrides["seq_length"] = data.get("seq_length")
    if "size" not in model:
        raise ConfigError(f"{source}: model.size is missing; expected a named size of emo_plugin.model.sizes")
    return sized_record(model["size"], overrides, source)
