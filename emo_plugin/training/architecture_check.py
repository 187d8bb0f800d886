"""Refuse to load a checkpoint into a model of another shape, naming the fields that differ.

Loading tensors into a differently shaped model ends deep inside ``dist_checkpointing`` with a shape traceback.
Before any tensor is read, the model record the checkpoint stores (the trainer and tools/import_hf.py write it;
older trainer checkpoints carry only their run config) is compared field by field with the current one; then,
as a backstop for what the fields do not describe, every model tensor's global shape is compared with the
checkpoint's metadata.
"""

from __future__ import annotations

from pathlib import Path

from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedTensor

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import RECORD_KEY, ModelRecord
from emo_plugin.model.run_config import record_of_run_config
from emo_plugin.run.validation import record_field_key

# What determines tensor shapes or which router rows are selectable, by record field. Pool sizes are not
# architecture: an EMO run may continue a standard MoE's checkpoint (EMO-anneal, docs/recipe.md).
_SHAPE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "num_moe_experts",
                 "moe_router_topk", "moe_ffn_hidden_size", "num_shared_experts", "num_inert_experts", "vocab_size")


def architecture(record: ModelRecord) -> dict:
    """The shape-relevant fields of a model record, keyed by their config names."""
    return {record_field_key(name): getattr(record, name) for name in _SHAPE_FIELDS}


def stored_architecture(common: dict) -> dict | None:
    """The same fields from a checkpoint's common state, or None if it does not describe its model."""
    try:
        if RECORD_KEY in common:
            return architecture(ModelRecord.from_dict(common[RECORD_KEY], "the checkpoint's model record"))
        if isinstance(common.get("config"), dict):  # a trainer checkpoint written before the record existed
            fields = architecture(record_of_run_config(common["config"], "the checkpoint's stored config"))
            fields.pop("model.vocab_size")
            if "vocab_size" in common:
                fields["model.vocab_size"] = common["vocab_size"]
            return fields
    except (ConfigError, TypeError):  # written by another version: the tensor check still runs
        return None
    return None


def check_fields(stored: dict | None, current: dict, source: Path) -> None:
    if stored is None:
        return
    differing = {k: (stored[k], current[k]) for k in stored if k in current and stored[k] != current[k]}
    if not differing:
        return
    listed = ", ".join(f"{key}: checkpoint {old}, now {new}" for key, (old, new) in differing.items())
    hint = ""
    if differing.keys() & {"model.num_moe_experts", "emo.num_inert_experts"}:
        hint = (f"; with emo.num_inert_experts given, model.num_moe_experts counts the expert slots (routed + inert), "
                f"so this checkpoint needs --model.num_moe_experts={stored['model.num_moe_experts']} "
                f"--emo.num_inert_experts={stored['emo.num_inert_experts']}")
    raise ConfigError(
        f"{source}: the checkpoint's model has another architecture ({listed}); set these fields to the "
        f"checkpoint's values to load it{hint}"
    )


def check_tensor_shapes(model_state: dict, source: Path) -> None:
    """Every model tensor must exist in the checkpoint with the same global shape."""
    metadata = dist_checkpointing.load_tensors_metadata(str(source))
    problems = []
    for tensor in nested_values(model_state):
        if not isinstance(tensor, ShardedTensor):
            continue
        stored = metadata.get(tensor.key)
        if stored is None:
            problems.append(f"{tensor.key} is not in the checkpoint")
        elif tuple(stored.global_shape) != tuple(tensor.global_shape):
            problems.append(f"{tensor.key}: checkpoint {tuple(stored.global_shape)}, now {tuple(tensor.global_shape)}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(f"{source}: the checkpoint's tensors do not fit the model ({'; '.join(problems[:3])}{more}); "
                          "the model config (or layer implementation) differs from the one it was written with")
