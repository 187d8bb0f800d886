"""Rewrite an EMO checkpoint with its routed experts, and their router rows, in a new order per layer.

A MoE layer's output does not depend on where an expert sits: moving expert ``order[s]`` to slot ``s`` together
with its router row permutes the router's logits and the experts alike, so every token picks the same experts
and gets the same output (document pools included: they are chosen from the same permuted sums). Only the
expert-parallel rank that holds each expert changes, which is the point (``emo-place-experts``).

Works on both forms the weight map (``weight_map.py``) knows: an exported Hugging Face folder (rewritten tensor
by tensor) and a Megatron dist checkpoint of any TP/EP/PP layout (read unit by unit, written as a weights-only
checkpoint that any layout loads; the optimizer starts afresh, as after ``emo-import-hf``). Shared experts and
inert padding slots stay where they are. Rank-limited pools (``emo.pool_max_ranks``) tie the function to
the expert groups, so such models are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from emo_plugin.convert import weight_map
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.dtypes import DTYPES
from emo_plugin.errors import ConversionError
from emo_plugin.model.record import ModelRecord

PLACEMENT_FILE = "expert_placement.json"


def check_orders(orders: dict[int, list[int]], num_layers: int, routed: list[int]) -> None:
    """One permutation of the layer's routed experts per layer."""
    if sorted(orders) != list(range(num_layers)):
        raise ConversionError(f"the placement covers layers {sorted(orders)}; the model has {num_layers}")
    for layer, order in orders.items():
        if sorted(order) != list(range(routed[layer])):
            raise ConversionError(f"layer {layer}: the order is not a permutation of its {routed[layer]} routed "
                                  "experts")


def refuse_rank_limited(pool_max_ranks: int | None, pool_rank_groups: int | None, source) -> None:
    if pool_max_ranks is not None:
        raise ConversionError(
            f"{source}: trained with rank-limited pools (emo.pool_max_ranks={pool_max_ranks}, "
            f"emo.pool_rank_groups={pool_rank_groups}): its pools depend on which group each expert is in, "
            "so moving experts would change the model; place experts of models without the limit")


def _placement_json(orders: dict[int, list[int]], placement: dict | None) -> str:
    return json.dumps(placement or {"orders": {str(k): v for k, v in orders.items()}}, indent=1) + "\n"


class PermutedWeights:
    """HF-named tensors of ``source`` (``names()``/``get()``) with each layer's routed experts reordered."""

    def __init__(self, source, orders: dict[int, list[int]], slots_per_layer: list[int]):
        self.source, self.folder = source, getattr(source, "folder", None)
        self.renamed: dict[str, str] = {}
        self.router_rows: dict[str, list[int]] = {}
        for layer, order in orders.items():
            self.router_rows[weight_map.hf_router_name(layer)] = order + list(range(len(order), slots_per_layer[layer]))
            for new, old in enumerate(order):
                self.renamed.update(zip(weight_map.hf_expert_names(layer, new), weight_map.hf_expert_names(layer, old)))

    def names(self) -> list[str]:
        return self.source.names()

    def get(self, name: str, expected_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        tensor = self.source.get(self.renamed.get(name, name), expected_shape)
        rows = self.router_rows.get(name)
        return tensor if rows is None else tensor[rows]


class DistCheckpointAsHf:
    """A dist checkpoint's weights under their HF names, each unit read on demand (the last one cached: a unit
    such as an expert's fc1 becomes several HF tensors)."""

    def __init__(self, reader: DistCheckpointReader, record: ModelRecord):
        self.reader, self.arch, self.folder = reader, record, reader.path
        self.unit_of = {name: unit for unit in weight_map.units(record) for name in unit.hf_names}
        self._cached: tuple[object, dict[str, torch.Tensor]] | None = None

    def names(self) -> list[str]:
        return list(self.unit_of)

    def get(self, name: str, expected_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        unit = self.unit_of[name]
        if self._cached is None or self._cached[0] is not unit:
            tensors = unit.row.layout.split(self.reader.read(unit.row.megatron, *unit.index), self.arch, unit.slots)
            self._cached = unit, dict(zip(unit.hf_names, tensors))
        return self._cached[1][name]


def permute_hf_folder(source: str | Path, output: str | Path, orders: dict[int, list[int]], *,
                      max_shard_size: str | int = "5GB", force: bool = False, placement: dict | None = None) -> dict:
    """The HF folder ``source`` with every layer's routed experts in ``orders[layer]`` (new slot → old expert)."""
    from emo_plugin.convert.hf_config import ROUTING_KEY
    from emo_plugin.convert.hf_files import write_hf_folder
    from emo_plugin.convert.hf_weights import HfWeights
    from emo_plugin.hf import EmoConfig

    config = EmoConfig.from_pretrained(str(source))
    slots = [config.expert_slots(i)[0] for i in range(config.num_hidden_layers)]
    routed = [n - config.expert_slots(i)[1] for i, n in enumerate(slots)]
    check_orders(orders, config.num_hidden_layers, routed)
    routing = getattr(config, ROUTING_KEY, None) or {}
    refuse_rank_limited(routing.get("pool_max_ranks"), routing.get("pool_rank_groups"), source)
    weights = PermutedWeights(HfWeights(source), orders, slots)
    extra = {PLACEMENT_FILE: _placement_json(orders, placement)}
    index = write_hf_folder(source, output, config, ((n, weights.get(n)) for n in weights.names()),
                            max_shard_size=max_shard_size, force=force, extra_files=extra)
    return {"output": str(output), "bytes": index["metadata"]["total_size"]}


def permute_dist_checkpoint(source: str | Path, output: str | Path, orders: dict[int, list[int]], *,
                            force: bool = False, progress: bool = False, placement: dict | None = None) -> dict:
    """The dist checkpoint ``source`` (any layout) with permuted experts, as a weights-only checkpoint."""
    from emo_plugin.convert.checkpoint_config import record_of
    from emo_plugin.convert.export import tokenizer_next_to
    from emo_plugin.convert.import_hf import save_weights_checkpoint

    reader = DistCheckpointReader(source)
    record, tokenizer = record_of(reader)
    refuse_rank_limited(record.pool_max_ranks, record.pool_rank_groups, reader.path)
    check_orders(orders, record.num_layers, [record.num_selectable_experts] * record.num_layers)
    slots = [record.num_selectable_experts + record.num_shared_experts] * record.num_layers
    weights = PermutedWeights(DistCheckpointAsHf(reader, record), orders, slots)
    tokenizer = tokenizer or tokenizer_next_to(reader.path)
    stored = reader.dtype(weight_map.EMBEDDING.megatron)
    dtype = next((name for name, value in DTYPES.items() if value == stored), "fp32")
    iteration_dir = save_weights_checkpoint(weights, record, output, dtype=dtype, force=force, inputs=(source,),
                                            tokenizer=Path(tokenizer) if tokenizer else None, progress=progress,
                                            extra_files={PLACEMENT_FILE: _placement_json(orders, placement)})
    return {"output": str(output), "iteration_dir": str(iteration_dir)}
