"""Write a pruned EMO HF checkpoint that physically holds only the kept experts.

Per layer, kept routed experts are renumbered 0..K-1 in their original order (so the pruned model adds expert
outputs in the same order as the masked full model) and followed by the shared slots; the router keeps the
matching rows. ``num_experts_per_layer`` / ``num_shared_experts_per_layer`` describe the result, which loads
with emo_plugin's (and AI2's) modelling code. Tensors are streamed from the source folder one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

from emo_plugin.convert import weight_map
from emo_plugin.convert.hf_files import write_hf_folder
from emo_plugin.convert.hf_weights import HfWeights
from emo_plugin.errors import ConversionError


def read_selection(path: Path) -> dict[int, list[int]]:
    """{layer: kept routed-expert ids} from a selection file: ``{layer: [ids]}`` (``expert_selection.json`` of a
    pruned folder, ``selections/<domain>/<subset>.json`` of ``emo-evaluate-subsets``) or an object with that under
    "layers" (``emo-select-experts --selection-json``)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: cannot read the selection ({error})") from None
    layers = record.get("layers", record) if isinstance(record, dict) else None
    if not isinstance(layers, dict) or not layers:
        raise ConversionError(f"{path}: expected a JSON object {{layer: [expert ids]}} (or one with a 'layers' key)")
    try:
        return {int(layer): [int(e) for e in experts] for layer, experts in layers.items()}
    except (TypeError, ValueError):
        raise ConversionError(f"{path}: layer keys must be integers and values lists of integer expert ids") from None


def checkpoint_size(hf: HfWeights) -> dict:
    """Bytes and parameters of a folder's tensors (read from the safetensors headers only)."""
    from safetensors import safe_open

    total_bytes = total_params = 0
    for file in sorted(set(hf.files.values())):
        with safe_open(hf.folder / file, "pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                numel = 1
                for n in sl.get_shape():
                    numel *= n
                total_params += numel
                total_bytes += numel * {"F32": 4, "BF16": 2, "F16": 2}.get(sl.get_dtype(), 4)
    return {"bytes": total_bytes, "parameters": total_params}


def write_pruned_checkpoint(
    source: str | Path,
    output: str | Path,
    selection: dict[int, list[int]],
    *,
    max_shard_size: str | int = "5GB",
    force: bool = False,
    weights=None,
) -> dict:
    """Returns {"before": {bytes, parameters}, "after": {...}}.

    ``weights`` (``names()`` and ``get(name)``, like ``HfWeights``) replaces the folder's tensors, e.g. with a
    model fine-tuned in memory; config, tokenizer and the "before" size still come from ``source``.
    """
    from emo_plugin.hf import EmoConfig

    source = Path(source)
    config = EmoConfig.from_pretrained(str(source))
    hf = HfWeights(source)
    tensors = hf if weights is None else weights
    source_slots, slots_per_layer, shared_per_layer, plan = [], [], [], []
    for i in range(config.num_hidden_layers):
        n_slots, n_shared = config.expert_slots(i)
        n_routed = n_slots - n_shared
        source_slots.append(n_slots)
        if i not in selection:
            raise ConversionError(f"selection has no entry for layer {i}")
        kept = sorted(selection[i])
        if len(set(kept)) != len(kept) or any(not 0 <= e < n_routed for e in kept):
            raise ConversionError(f"layer {i}: kept experts {kept} are not distinct ids in [0, {n_routed})")
        if len(kept) < config.num_experts_per_tok - n_shared:
            raise ConversionError(
                f"layer {i}: {len(kept)} kept experts < {config.num_experts_per_tok - n_shared} per token"
            )
        slots = kept + list(range(n_routed, n_slots))  # shared experts last
        plan.append(slots)
        slots_per_layer.append(len(slots))
        shared_per_layer.append(n_shared)
    pruned_layers = {"num_experts_per_layer": slots_per_layer, "num_shared_experts_per_layer": shared_per_layer}
    config = EmoConfig.from_dict(config.to_dict() | pruned_layers)  # a new config: validated like any other
    rewritten = {weight_map.hf_router_name(i) for i in range(config.num_hidden_layers)}
    for i, n_slots in enumerate(source_slots):
        rewritten.update(name for e in range(n_slots) for name in weight_map.hf_expert_names(i, e))

    def pruned_tensors():
        yield from ((name, tensors.get(name)) for name in tensors.names() if name not in rewritten)
        for i, slots in enumerate(plan):
            yield weight_map.hf_router_name(i), tensors.get(weight_map.hf_router_name(i))[slots]
            for new, old in enumerate(slots):
                for name, source_name in zip(weight_map.hf_expert_names(i, new), weight_map.hf_expert_names(i, old)):
                    yield name, tensors.get(source_name)

    selection_json = json.dumps({str(k): v for k, v in selection.items()}) + "\n"
    index = write_hf_folder(source, output, config, pruned_tensors(), max_shard_size=max_shard_size, force=force,
                            extra_files={"expert_selection.json": selection_json})
    after = {"bytes": index["metadata"]["total_size"], "parameters": index["metadata"]["total_parameters"]}
    return {"before": checkpoint_size(hf), "after": after}
