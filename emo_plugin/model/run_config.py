"""The model record of a training run config: ``model.size`` plus the ``model.*``, ``emo.*`` and
``data.seq_length`` fields that override single record fields.

Works on the plain mapping form of the config (a YAML file, or what the trainer stores in a checkpoint's
``common["config"]``), so that reading a run's model needs no training code. Fields of those sections that
only concern training (``model.init_method_std``, ``emo.lb_scope``, ...) are not part of the model and are
ignored here. Unless ``emo.num_inert_experts`` is given, the inert padding is derived: the fewest inert slots
that make ``parallel.expert_model_parallel_size`` divide the expert slots (``ModelRecord.with_inert_padding``).
"""

from __future__ import annotations

from typing import Any, Mapping

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord, fields_of_section
from emo_plugin.model.sizes import sized_record

MODEL_FIELDS = tuple(f.name for f in fields_of_section("model"))
"""Record fields a run config overrides in its ``model`` section (the record's field metadata says which)."""
EMO_FIELDS = tuple(f.name for f in fields_of_section("emo"))
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
    overrides.update({f.name: data.get(f.name) for f in fields_of_section("data")})
    if "size" not in model:
        raise ConfigError(f"{source}: model.size is missing; expected a named size of emo_plugin.model.sizes")
    record = sized_record(model["size"], overrides, source)
    if overrides["num_inert_experts"] is None:  # derived: pad the routed experts to a multiple of EP
        expert_parallel = _section(values, "parallel", source).get("expert_model_parallel_size") or 1
        if isinstance(expert_parallel, int) and expert_parallel >= 1:  # anything else: validation names it
            record = record.with_inert_padding(expert_parallel)
    return record
