"""The model record: one typed, frozen description of an EMO model, and nothing that depends on how it runs.

A record fixes everything the weights and the routing recipe depend on: the transformer shape, the experts,
the EMO pools and loss coefficients, and the tokenizer's eos/pad ids. The named sizes
(``emo_plugin.model.sizes``) are records; a training run resolves its config into one
(``emo_plugin.model.run_config``), the trainer and the HF importer store it in every checkpoint's common
state under ``RECORD_KEY``, and the exporter reads it back. Translations live in one place each:
``emo_plugin.model.megatron_config`` (→ Megatron ``EmoTransformerConfig``) and ``emo_plugin.convert.hf_config``
(↔ Hugging Face ``EmoConfig``).

Expert counts follow Megatron's convention (see ``emo_plugin/moe/config.py``): ``num_moe_experts`` counts the
expert slots (the router's rows) — the routed experts a token may choose (``num_selectable_experts``) followed by
``num_inert_experts`` inert padding slots that are never selected — and not the shared experts;
``moe_router_topk`` counts routed experts per token (k − shared).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from emo_plugin import expert_blocks
from emo_plugin.errors import ConfigError
from emo_plugin.typed_values import coerce

RECORD_KEY = "emo_model"
"""Key of the record (``ModelRecord.to_dict()``) in a checkpoint's common state."""


def _field(default: Any = dataclasses.MISSING, *, section: str | None, help: str, config_default: str = "the size's"):
    """A record field; ``section``: the training-config section whose field of the same name overrides it
    (``model``, ``emo``, ``data``; ``None``: not set by a training config), ``help``: its one description, which
    ``emo-pretrain --help`` prints too, ``config_default``: where a training run takes it from when not set."""
    kwargs = {} if default is dataclasses.MISSING else {"default": default}
    return dataclasses.field(**kwargs, metadata={"section": section, "help": help, "config_default": config_default})


@dataclass(frozen=True)
class ModelRecord:
    num_layers: int = _field(section="model", help="transformer layers")
    hidden_size: int = _field(section="model", help="d_model")
    num_attention_heads: int = _field(section="model", help="attention heads")
    num_query_groups: int = _field(section="model", help="KV heads (= heads for MHA)")
    moe_ffn_hidden_size: int = _field(section="model", help="width of every expert's SwiGLU MLP (routed and shared)")
    num_moe_experts: int = _field(
        section="model", help="expert slots (the router's rows): the routed experts, then the inert padding slots; "
        "shared experts not counted. In a training config: the routed experts, padded by the derived "
        "emo.num_inert_experts (given explicitly, this counts the slots, inert ones included)")
    moe_router_topk: int = _field(section="model", help="routed experts per token (k minus the shared experts)")
    vocab_size: int = _field(section="model", help="vocabulary size",
                             config_default="the tokenizer's, padded to a multiple of 128 × TP")
    seq_length: int = _field(section="data", help="tokens per training sequence, also the longest position the "
                             "model is built for")
    pool_min: int = _field(section="emo", help="smallest per-document expert pool drawn in training")
    pool_max: int = _field(section="emo", help="largest per-document pool drawn in training (>= the routed "
                           "experts: unrestricted)")
    pool_eval: int = _field(section="emo", help="fixed per-document pool in evaluation")
    pool_min_per_layer: tuple[int, ...] | None = _field(
        None, section="emo", help="pool_min of each layer, one entry per layer, first layer first (none: pool_min "
        "in every layer)")
    pool_max_per_layer: tuple[int, ...] | None = _field(
        None, section="emo", help="pool_max of each layer, e.g. the routed experts in early layers to leave them "
        "unrestricted")
    pool_max_ranks: int | None = _field(
        None, section="emo", help="rank-limited pools (none: off): each document's training pool comes only from "
        "the experts of its pool_max_ranks best expert groups (largest summed router probability), so its tokens "
        "reach at most that many expert-parallel ranks (docs/expert_parallel.md)")
    pool_rank_groups: int | None = _field(
        None, section="emo", help="the contiguous expert groups pool_max_ranks counts: the expert-parallel size the "
        "limit is meant for (required with pool_max_ranks; part of the model, so resharding keeps it)")
    eos_grouping: Literal["ends", "starts"] = _field(
        "ends", section="emo", help="which document routes an end-of-document token: the one it 'ends' "
        "(emo_plugin's convention) or the one that 'starts' after it (AI2's training router); attention always "
        "keeps it in the document it ends")
    num_shared_experts: int = _field(1, section="emo", help="always-active experts (gate 1.0)")
    num_inert_experts: int = _field(
        0, section="emo", help="never-selected expert slots after the routed ones, padding the slots to a multiple "
        "of the expert-parallel size (an imported AI2 checkpoint has 127 routed experts)",
        config_default="derived, the fewest that make parallel.expert_model_parallel_size divide the slots")
    rotary_base: int = _field(500_000, section="model", help="RoPE theta")
    norm_epsilon: float = _field(1e-6, section=None, help="RMSNorm epsilon")
    qk_layernorm: bool = _field(False, section=None, help="RMSNorm on queries and keys")
    lb_coeff: float = _field(0.1, section="emo", help="coefficient of the data-parallel-global load-balancing loss")
    z_loss_coeff: float = _field(0.001, section="emo", help="coefficient of the router z-loss on the pool-masked "
                                 "logits")
    max_documents_per_sequence: int = _field(
        256, section="emo", help="static bound on document segments per sequence (sizes the router's per-document "
        "buffers)")
    eos_token_id: int | None = _field(
        2, section=None, help="end-of-document id; the default is that of emo_plugin's sentencepiece tokenizers "
        "(data/tokenizer.py); a training run takes it from its tokenizer")
    pad_token_id: int | None = _field(0, section=None, help="padding id")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_selectable_experts(self) -> int:
        """R, the routed experts a token may choose: the expert slots less the inert padding."""
        return expert_blocks.num_selectable_experts(self.num_moe_experts, self.num_inert_experts)

    def with_inert_padding(self, expert_parallel_size: int) -> ModelRecord:
        """The same model with inert slots padding its routed experts to a multiple of ``expert_parallel_size``."""
        inert = -self.num_selectable_experts % expert_parallel_size
        return dataclasses.replace(self, num_moe_experts=self.num_selectable_experts + inert, num_inert_experts=inert)

    def to_dict(self) -> dict[str, Any]:
        """Plain json-able values, keyed by field name (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "model record") -> ModelRecord:
        """The record of ``values`` (all required fields, no unknown ones), each value checked against its type."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected a mapping of model record fields, got {type(values).__name__}")
        unknown = sorted(set(values) - set(FIELD_TYPES))
        if unknown:
            raise ConfigError(f"{source}: unknown model record field(s) {unknown}; known: {sorted(FIELD_TYPES)}")
        missing = sorted(name for name in REQUIRED_FIELDS if name not in values)
        if missing:
            raise ConfigError(f"{source}: missing model record field(s) {missing}")
        return cls(**{name: typed_value(name, value, source) for name, value in values.items()})


FIELD_TYPES: dict[str, Any] = typing.get_type_hints(ModelRecord)


def fields_of_section(section: str) -> tuple[dataclasses.Field, ...]:
    """The record fields a training config's ``section`` overrides, in record order."""
    return tuple(f for f in dataclasses.fields(ModelRecord) if f.metadata["section"] == section)
REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(ModelRecord) if f.default is dataclasses.MISSING)


def typed_value(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of field ``name``, or ``ConfigError`` naming the source and the field."""
    return coerce(value, FIELD_TYPES[name], f"{source}: {name}")
