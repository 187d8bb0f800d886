"""Small builders shared by tests (tiny configs; CPU, fp32, no dropout)."""

import torch

from emo_plugin.model.record import ModelRecord
from emo_plugin.moe.config import EmoRouterConfig, EmoTransformerConfig

TINY = ModelRecord(
    num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, moe_ffn_hidden_size=16,
    num_moe_experts=8, moe_router_topk=2, num_shared_experts=1, vocab_size=64, seq_length=64,
    pool_min=2, pool_max=8, pool_eval=4, max_documents_per_sequence=16, eos_token_id=2, pad_token_id=0,
)
"""The one tiny test shape: 8 routed + 1 shared experts of width 16, GQA 4 heads / 2 groups. ``tiny_config``
(Megatron), ``tiny_hf_fields`` (Hugging Face) and the converters' tests read it."""


def tiny_hf_fields(**overrides) -> dict:
    """``TINY`` as Hugging Face ``EmoConfig`` keyword arguments (HF counts the shared expert among its experts)."""
    fields = dict(
        vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size, intermediate_size=TINY.moe_ffn_hidden_size,
        num_hidden_layers=TINY.num_layers, num_attention_heads=TINY.num_attention_heads,
        num_key_value_heads=TINY.num_query_groups, num_experts=TINY.num_moe_experts + TINY.num_shared_experts,
        num_experts_per_tok=TINY.moe_router_topk + TINY.num_shared_experts, num_shared_experts=TINY.num_shared_experts,
        max_position_embeddings=TINY.seq_length,
    )
    return {**fields, **overrides}


def tiny_config(**overrides) -> EmoTransformerConfig:
    emo = overrides.pop("emo", {})
    kwargs = dict(
        num_layers=TINY.num_layers,
        hidden_size=TINY.hidden_size,
        num_attention_heads=TINY.num_attention_heads,
        num_query_groups=TINY.num_query_groups,
        ffn_hidden_size=64,
        num_moe_experts=TINY.num_moe_experts,
        moe_router_topk=TINY.moe_router_topk,
        moe_ffn_hidden_size=TINY.moe_ffn_hidden_size,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        use_cpu_initialization=True,
        params_dtype=torch.float32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        moe_router_dtype="fp32",
        moe_token_dispatcher_type="allgather",
    )
    kwargs.update(overrides)
    emo_kwargs = dict(pool_min=TINY.pool_min, pool_max=TINY.pool_max, pool_eval=TINY.pool_eval,
                      num_shared_experts=TINY.num_shared_experts, lb_coeff=TINY.lb_coeff,
                      z_loss_coeff=TINY.z_loss_coeff, max_documents_per_sequence=TINY.max_documents_per_sequence)
    emo_kwargs.update(emo)
    return EmoTransformerConfig(**kwargs, emo=EmoRouterConfig(**emo_kwargs))


def resolved(cfg, world_size: int = 1):
    """``cfg`` resolved as the trainer resolves it (its Transformer Engine decision included), without the data
    and output checks (tests build backends and plans from configs that name no dataset)."""
    import dataclasses

    from emo_plugin.run.resolve import resolve
    from emo_plugin.run.transformer import use_transformer_engine

    run = resolve(cfg, world_size, planning_only=True)
    return dataclasses.replace(run, transformer_engine=use_transformer_engine(cfg, run.device))


def run_record(cfg):
    """The model record of ``cfg`` before the tokenizer (what ``resolve`` starts from), for tests that build
    single pieces of a run."""
    from emo_plugin.model.run_config import record_of_run_config
    from emo_plugin.run.config import to_dict

    return record_of_run_config(to_dict(cfg))


def checked(cfg, world_size: int | None = None):
    """What ``emo-pretrain --check-config`` does (``planning/fit_check.check_config``)."""
    from emo_plugin.planning.fit_check import check_config

    return check_config(cfg, world_size)


def planning_run(cfg, world_size: int = 1):
    """``cfg`` resolved as ``emo-pretrain --dry-run`` resolves it (on any machine: no Transformer Engine needed)."""
    from emo_plugin.run.resolve import resolve

    return resolve(cfg, world_size, planning_only=True)
