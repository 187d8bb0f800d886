"""Put a fine-tuned expert subset back into the full EMO Hugging Face model it was cut from (re-insertion).

Fine-tuning a subset trains its kept routed experts, their router rows, the shared experts and every weight
outside the experts (``EmoForCausalLM.training_only_kept_experts``). Re-insertion writes the full model with
all of those at the kept experts' ORIGINAL indices; the dropped experts and their router rows keep the full
model's weights, so the result has the full model's shape and record and can route to every expert again.

The subset is either a pruned folder (``emo-prune-experts``, ``emo-evaluate-subsets --save-finetuned``), whose
slot j of a layer holds the j-th smallest kept expert followed by the shared slots (``prune.py``), or a
full-size model fine-tuned with the other experts masked, whose slots are the original ones. Either way the
kept routed-expert ids per layer come with it (``expert_selection.json`` of a pruned folder). The two folders
must describe the same model (``SAME_MODEL_FIELDS``, tokenizer files, tensor names, shapes and dtypes); any
difference is refused naming the field, file or tensor. Tensors are streamed one at a time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from emo_plugin.convert import weight_map
from emo_plugin.convert.hf_files import TOKENIZER_FILES, copy_extra_files, copy_modeling_code, write_config
from emo_plugin.convert.hf_weights import HfWeights
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.convert.safetensors_writer import ShardedSafetensorsWriter, parse_size
from emo_plugin.errors import ConversionError

SAME_MODEL_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "num_experts_per_tok",
    "norm_topk_prob", "pad_token_id", "bos_token_id", "eos_token_id",
)
"""config.json fields that a fine-tuned subset shares with its full model (expert counts may differ)."""

TOKENIZER_NAMES = tuple(name for name in TOKENIZER_FILES if name != "generation_config.json")


def check_same_model(full: Path, subset: Path, full_config, subset_config) -> None:
    """Refuse a subset whose record or tokenizer differs from the full model's."""
    for field in SAME_MODEL_FIELDS:
        expected, found = getattr(full_config, field), getattr(subset_config, field)
        if found != expected:
            raise ConversionError(
                f"{subset / 'config.json'}: {field} is {found!r}, but {full / 'config.json'} has {expected!r}; "
                "the subset must be cut from this full model"
            )
    for name in TOKENIZER_NAMES:
        if (subset / name).is_file() and (
            not (full / name).is_file() or (subset / name).read_bytes() != (full / name).read_bytes()
        ):
            raise ConversionError(
                f"{subset / name} differs from the full model's ({full / name}): the two checkpoints use different "
                "tokenizers"
            )


def subset_slots(full_config, subset_config, selection: dict[int, list[int]]) -> list[dict[int, int]]:
    """Per layer {original slot: the subset's slot} of every slot the subset holds (kept routed + shared)."""
    layers = full_config.num_hidden_layers
    unknown = sorted(set(selection) - set(range(layers)))
    if unknown:
        raise ConversionError(f"selection names layers {unknown}, but the model has layers 0..{layers - 1}")
    maps = []
    for i in range(layers):
        n_slots, n_shared = full_config.expert_slots(i)
        n_routed = n_slots - n_shared
        if i not in selection:
            raise ConversionError(f"selection has no entry for layer {i}")
        kept = sorted(selection[i])
        if len(set(kept)) != len(kept) or any(not 0 <= e < n_routed for e in kept):
            raise ConversionError(f"layer {i}: kept experts {kept} are not distinct ids in [0, {n_routed})")
        subset_n_slots, subset_n_shared = subset_config.expert_slots(i)
        if subset_n_shared != n_shared:
            raise ConversionError(
                f"layer {i}: the subset has {subset_n_shared} shared experts, the full model {n_shared}"
            )
        held = kept + list(range(n_routed, n_slots))  # in a pruned folder's expert order: shared experts last
        if subset_n_slots == n_slots:  # a masked full-size model: the original expert indices
            maps.append({slot: slot for slot in held})
        elif subset_n_slots == len(held):  # a pruned model: renumbered 0..len(held)-1
            maps.append({slot: position for position, slot in enumerate(held)})
        else:
            raise ConversionError(
                f"layer {i}: the subset has {subset_n_slots} expert slots, but the selection keeps {len(kept)} routed "
                f"+ {n_shared} shared of the full model's {n_slots}; the selection does not belong to this subset"
            )
    return maps


def _subset_tensor(subset: HfWeights, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The subset's tensor ``name``, refused by name unless it has the shape and dtype the full model needs."""
    tensor = subset.get(name, shape)
    if tensor.dtype != dtype:
        raise ConversionError(
            f"{subset.folder}: tensor {name!r} is {tensor.dtype}, the full model's is {dtype}; fine-tune (and save) "
            "the subset in the full model's dtype"
        )
    return tensor


def write_reinserted_checkpoint(
    full: str | Path,
    subset: str | Path,
    output: str | Path,
    selection: dict[int, list[int]],
    *,
    max_shard_size: str | int = "5GB",
    force: bool = False,
) -> dict:
    """Returns {"reinserted_slots": {layer: the original slots taken from the subset}, "tensors": n}."""
    from emo_plugin.hf import EmoConfig

    full, subset = Path(full), Path(subset)
    for folder in (full, subset):
        if not (folder / "config.json").is_file():
            raise ConversionError(f"{folder}: not a Hugging Face checkpoint folder (no config.json)")
    full_config, subset_config = EmoConfig.from_pretrained(str(full)), EmoConfig.from_pretrained(str(subset))
    check_same_model(full, subset, full_config, subset_config)
    maps = subset_slots(full_config, subset_config, selection)
    full_weights, subset_weights = HfWeights(full), HfWeights(subset)

    routers = {weight_map.hf_router_name(i): i for i in range(full_config.num_hidden_layers)}
    expert_sources = {}  # full model's expert tensor → the subset's tensor, None for a dropped expert
    for i, slots in enumerate(maps):
        for slot in range(full_config.expert_slots(i)[0]):
            names = weight_map.hf_expert_names(i, slot)
            sources = weight_map.hf_expert_names(i, slots[slot]) if slot in slots else [None] * len(names)
            expert_sources.update(zip(names, sources))
    expected = {name for name in full_weights.names() if name not in expert_sources} | {
        name for i in range(len(maps)) for slot in range(subset_config.expert_slots(i)[0])
        for name in weight_map.hf_expert_names(i, slot)
    }
    unexpected = sorted(set(subset_weights.names()) - expected)
    if unexpected:
        raise ConversionError(
            f"{subset}: tensor {unexpected[0]!r} ({len(unexpected)} in all) has no place in the full model {full}"
        )

    dtype = full_weights.get(weight_map.EMBEDDING.hf_names()[0]).dtype
    with atomic_output_dir(output, force, inputs=(full, subset)) as folder:
        writer = ShardedSafetensorsWriter(folder, parse_size(max_shard_size))
        for name in full_weights.names():
            tensor = full_weights.get(name)
            source = expert_sources.get(name, name)  # every tensor outside the experts has the same name in both
            if name in routers:
                slots = maps[routers[name]]
                shape = (subset_config.expert_slots(routers[name])[0], tensor.shape[1])
                subset_rows = _subset_tensor(subset_weights, name, shape, tensor.dtype)
                tensor = tensor.clone()
                tensor[list(slots)] = subset_rows[list(slots.values())]
            elif source is not None:
                tensor = _subset_tensor(subset_weights, source, tuple(tensor.shape), tensor.dtype)
            writer.add(name, tensor)
        index = writer.close()
        write_config(folder, full_config, dtype)
        copy_modeling_code(folder)
        copy_extra_files(full, folder, TOKENIZER_FILES)
    return {"reinserted_slots": {i: sorted(slots) for i, slots in enumerate(maps)}, "tensors": len(index["weight_map"])}
