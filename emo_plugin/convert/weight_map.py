"""The one table from Megatron's global checkpoint keys to EMO's Hugging Face weight names, read both ways.

Each row pairs a global key of ``GPTModel.sharded_state_dict()`` (convert/megatron_keys.py; the same for
every TP/EP/PP layout) with the HF name templates it becomes and the layout relating the two tensors
(convert/layouts.py). A row's scope says which leading indices of the global tensor make one *unit*, the
slice that becomes a fixed group of HF tensors:

* whole tensor (embedding, final norm, output); layer: the slice of one layer;
* expert: one Megatron expert of one layer. Routed expert e is HF expert e; the trailing inert experts (padding
  for expert parallelism) have no HF tensors: zeros on import, dropped on export;
* shared: Megatron's ONE shared-experts MLP of a layer (width S × ffn), which is HF experts R … R+S-1, the
  last experts of the layer.

Export reads every unit's slice and splits it; import merges every host-model slice from its HF tensors;
pruning finds a Hugging Face expert's tensors here. ``markdown_table`` renders the map for docs/architecture.md.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from emo_plugin.convert import layouts
from emo_plugin.convert import megatron_keys as K
from emo_plugin.convert.layouts import Layout


class Scope(enum.Enum):
    MODEL = "whole tensor"
    LAYER = "layer"
    EXPERT = "layer, expert e: routed e < R ↔ HF slot e; inert e ≥ R ↔ none"
    SHARED = "layer ↔ HF slots R … R+S-1 (the last)"


@dataclass(frozen=True)
class HfTensor:
    template: str
    """Formatted with ``layer`` and ``expert`` (the HF slot)."""
    shape: Callable[[object], tuple[int, ...]]


@dataclass(frozen=True)
class Row:
    megatron: str
    hf: tuple[HfTensor, ...]
    scope: Scope
    layout: Layout
    sharding: str
    """Which axes of the Megatron slice the tensor/expert-parallel ranks split (documentation only: the
    checkpoint stores the global tensor whatever the layout)."""

    def hf_names(self, **indices: int) -> list[str]:
        return [t.template.format(**indices) for t in self.hf]


@dataclass(frozen=True)
class Unit:
    """One Megatron slice ``global_tensor[index]`` and the HF tensors it becomes (none for an inert expert)."""

    row: Row
    index: tuple[int, ...]
    hf_names: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]

    @property
    def slots(self) -> int:
        return len(self.hf_names) // len(self.row.hf)


HF_LAYER = "model.layers.{layer}."
_HF_LAYER_NAME = re.compile(re.escape(HF_LAYER).replace(r"\{layer\}", r"(\d+)"))


def _layer(name: str, shape: Callable[[object], tuple[int, ...]]) -> HfTensor:
    return HfTensor(HF_LAYER + name, shape)


def _expert_slot(proj: str, shape: Callable[[object], tuple[int, ...]]) -> HfTensor:
    return _layer(f"mlp.experts.{{expert}}.{proj}_proj.weight", shape)


def _vocab(a):
    return (a.vocab_size, a.hidden_size)


def _norm(a):
    return (a.hidden_size,)


def _query(a):
    return (a.num_attention_heads * a.head_dim, a.hidden_size)


def _key_value(a):
    return (a.num_query_groups * a.head_dim, a.hidden_size)


def _attention_out(a):
    return (a.hidden_size, a.num_attention_heads * a.head_dim)


def _gate(a):
    return (a.num_selectable_experts + a.num_shared_experts, a.hidden_size)


def _expert_in(a):
    return (a.moe_ffn_hidden_size, a.hidden_size)


def _expert_out(a):
    return (a.hidden_size, a.moe_ffn_hidden_size)


_GATE_UP = (_expert_slot("gate", _expert_in), _expert_slot("up", _expert_in))
_DOWN = (_expert_slot("down", _expert_out),)
_QKV = (
    _layer("self_attn.q_proj.weight", _query),
    _layer("self_attn.k_proj.weight", _key_value),
    _layer("self_attn.v_proj.weight", _key_value),
)

EMBEDDING = Row(K.EMBEDDING, (HfTensor("model.embed_tokens.weight", _vocab),), Scope.MODEL, layouts.SAME, "TP: rows")
ROUTER = Row(K.ROUTER, (_layer("mlp.gate.weight", _gate),), Scope.LAYER, layouts.ROUTER, "replicated")
LAYER_ROWS = (
    Row(K.INPUT_NORM, (_layer("pre_attention_layernorm.weight", _norm),), Scope.LAYER, layouts.SAME, "replicated"),
    Row(K.QKV, _QKV, Scope.LAYER, layouts.QKV, "TP: rows (whole query groups)"),
    Row(K.PROJ, (_layer("self_attn.o_proj.weight", _attention_out),), Scope.LAYER, layouts.SAME, "TP: columns"),
    Row(K.MLP_NORM, (_layer("pre_feedforward_layernorm.weight", _norm),), Scope.LAYER, layouts.SAME, "replicated"),
    ROUTER,
)
EXPERT_ROWS = (
    Row(K.EXPERT_FC1, _GATE_UP, Scope.EXPERT, layouts.SWIGLU_FC1, "EP: experts; TP: rows of gate and of up"),
    Row(K.EXPERT_FC2, _DOWN, Scope.EXPERT, layouts.COLUMNS, "EP: experts; TP: columns"),
)
SHARED_ROWS = (
    Row(K.SHARED_FC1, _GATE_UP, Scope.SHARED, layouts.SWIGLU_FC1, "TP: rows of gate and of up"),
    Row(K.SHARED_FC2, _DOWN, Scope.SHARED, layouts.COLUMNS, "TP: columns"),
)
OUTPUT_ROWS = (
    Row(K.FINAL_NORM, (HfTensor("model.norm.weight", _norm),), Scope.MODEL, layouts.SAME, "replicated"),
    Row(K.OUTPUT, (HfTensor("lm_head.weight", _vocab),), Scope.MODEL, layouts.SAME, "TP: rows"),
)
ROWS = (EMBEDDING, *LAYER_ROWS, *EXPERT_ROWS, *SHARED_ROWS, *OUTPUT_ROWS)


def _unit(row: Row, record, index: tuple[int, ...], slots: list[dict]) -> Unit:
    names = tuple(name for where in slots for name in row.hf_names(**where))
    shapes = tuple(t.shape(record) for _ in slots for t in row.hf)
    return Unit(row, index, names, shapes)


def units(record) -> Iterator[Unit]:
    """Every unit of the architecture, in the order export writes them: embedding, then per layer its
    attention and router, expert by expert, the shared experts; final norm and output last."""
    R, S = record.num_selectable_experts, record.num_shared_experts
    yield _unit(EMBEDDING, record, (), [{}])
    for i in range(record.num_layers):
        yield from (_unit(row, record, (i,), [{"layer": i}]) for row in LAYER_ROWS)
        for e in range(record.num_moe_experts):
            slot = [{"layer": i, "expert": e}] if e < R else []
            yield from (_unit(row, record, (i, e), slot) for row in EXPERT_ROWS)
        if S:
            shared = [{"layer": i, "expert": R + s} for s in range(S)]
            yield from (_unit(row, record, (i,), shared) for row in SHARED_ROWS)
    yield from (_unit(row, record, (), [{}]) for row in OUTPUT_ROWS)


def hf_router_name(layer: int) -> str:
    (name,) = ROUTER.hf_names(layer=layer)
    return name


def hf_expert_names(layer: int, slot: int) -> list[str]:
    """The HF tensors of one Hugging Face expert (routed or shared): what pruning keeps or drops together."""
    return [name for row in EXPERT_ROWS for name in row.hf_names(layer=layer, expert=slot)]


def hf_layer_of(name: str) -> int | None:
    """The layer an HF weight name belongs to, None for the model-wide tensors."""
    match = _HF_LAYER_NAME.match(name)
    return int(match.group(1)) if match else None


def markdown_table() -> str:
    lines = [
        "| Megatron key (global) | unit | Hugging Face names | layout | split across ranks |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        hf = "<br>".join(f"`{t.template}`" for t in row.hf)
        lines.append(f"| `{row.megatron}` | {row.scope.value} | {hf} | {row.layout.description} | {row.sharding} |")
    return "\n".join(lines) + "\n"
