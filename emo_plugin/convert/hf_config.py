"""A model record as Hugging Face ``EmoConfig`` keyword arguments, and the record of an HF config.

The two worlds count experts differently (``emo_plugin/moe/config.py``): Megatron ``num_moe_experts`` = router
rows (incl. inert padding), shared experts are one wide ``shared_experts`` MLP, ``moe_router_topk`` = routed
experts per token; HF ``num_experts`` = all slots incl. the shared ones (the LAST slots), ``num_experts_per_tok``
= k incl. shared. Inert experts exist only in Megatron. The training-time routing recipe, which inference does
not use, travels in config.json as ``router_aux_loss_coef`` (OLMoE's name) and ``emo_routing``; an HF config
without it (e.g. AI2's releases) reads as the HF model's own routing: pools that never restrict. The EOS
grouping is used by both, so it is the HF model's own field ``emo_eos_grouping`` (absent: "ends").
"""

from __future__ import annotations

from emo_plugin.errors import ConversionError
from emo_plugin.model.record import ModelRecord

ROUTING_KEY = "emo_routing"
ROUTING_FIELDS = ("pool_min", "pool_max", "pool_eval", "pool_min_per_layer", "pool_max_per_layer", "pool_max_ranks",
                  "pool_rank_groups", "z_loss_coeff", "max_documents_per_sequence")


def hf_config_kwargs(record: ModelRecord) -> dict:
    """``EmoConfig`` keyword arguments of ``record`` (inert experts dropped)."""
    if record.qk_layernorm:
        raise ConversionError("qk_layernorm=True: the Hugging Face EMO model has no QK norm; cannot export it")
    return dict(
        vocab_size=record.vocab_size,
        hidden_size=record.hidden_size,
        intermediate_size=record.moe_ffn_hidden_size,
        num_hidden_layers=record.num_layers,
        num_attention_heads=record.num_attention_heads,
        num_key_value_heads=record.num_query_groups,
        max_position_embeddings=record.seq_length,
        rms_norm_eps=record.norm_epsilon,
        rope_theta=float(record.rotary_base),
        num_experts=record.num_selectable_experts + record.num_shared_experts,
        num_experts_per_tok=record.moe_router_topk + record.num_shared_experts,
        num_shared_experts=record.num_shared_experts,
        norm_topk_prob=False,
        eos_token_id=record.eos_token_id,
        pad_token_id=record.pad_token_id,
        tie_word_embeddings=False,
        router_aux_loss_coef=record.lb_coeff,
        emo_eos_grouping=record.eos_grouping,
        **{ROUTING_KEY: {name: getattr(record, name) for name in ROUTING_FIELDS}},
    )


def record_from_hf_config(config) -> ModelRecord:
    """The record of an ``EmoConfig``; refuses what Megatron cannot represent."""
    if config.num_experts_per_layer is not None and len(set(config.num_experts_per_layer)) > 1:
        raise ConversionError(
            f"num_experts_per_layer={config.num_experts_per_layer}: Megatron needs the same expert count in "
            "every layer; a pruned checkpoint with per-layer counts cannot be imported"
        )
    slots, shared = config.expert_slots(0)
    if config.num_experts_per_layer is not None and any(
        config.expert_slots(i)[1] != shared for i in range(config.num_hidden_layers)
    ):
        raise ConversionError("num_shared_experts_per_layer differs between layers: not representable in Megatron")
    if getattr(config, "norm_topk_prob", False):
        raise ConversionError("norm_topk_prob=True: EMO's Megatron router does not renormalise the top-k gates")
    if float(config.rope_theta) != int(config.rope_theta):
        raise ConversionError(f"rope_theta={config.rope_theta}: expected a whole number (Megatron's rotary_base)")
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
    routed, per_token = slots - shared, config.num_experts_per_tok - shared
    unrestricted = dict(pool_min=per_token, pool_max=routed, pool_eval=config.emo_inference_pool_size or routed)
    routing = getattr(config, ROUTING_KEY, None) or unrestricted
    unknown = sorted(set(routing) - set(ROUTING_FIELDS))
    if unknown:
        raise ConversionError(f"{ROUTING_KEY}: unknown field(s) {unknown}; known: {list(ROUTING_FIELDS)}")
    values = dict(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        num_query_groups=config.num_key_value_heads,
        moe_ffn_hidden_size=config.intermediate_size,
        num_moe_experts=routed,
        moe_router_topk=per_token,
        num_shared_experts=shared,
        vocab_size=config.vocab_size,
        seq_length=config.max_position_embeddings,
        rotary_base=int(config.rope_theta),
        norm_epsilon=config.rms_norm_eps,
        lb_coeff=config.router_aux_loss_coef,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
        eos_grouping=config.emo_eos_grouping,
        **routing,
    )
    return ModelRecord.from_dict(values, "Hugging Face config")
