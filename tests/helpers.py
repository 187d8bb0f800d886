"""Small builders shared by tests (tiny configs; CPU, fp32, no dropout)."""

import torch

from emo_plugin.moe.config import EmoRouterConfig, EmoTransformerConfig


def tiny_config(**overrides) -> EmoTransformerConfig:
    emo = overrides.pop("emo", {})
    kwargs = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=64,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=16,
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
    emo_kwargs = dict(pool_min=2, pool_max=8, pool_eval=4, num_shared_experts=1, lb_coeff=0.1, z_loss_coeff=0.001,
                      max_documents_per_sequence=16)
    emo_kwargs.update(emo)
    return EmoTransformerConfig(**kwargs, emo=EmoRouterConfig(**emo_kwargs))
