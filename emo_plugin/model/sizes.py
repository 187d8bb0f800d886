"""Named model sizes (torchtitan style): one frozen record per shape, nothing else.

A size fixes the architecture and the EMO routing defaults. Training configs pick one by name
(``model.size``) and may override single fields; ``emo_plugin.training.builders`` turns the result into an
``EmoTransformerConfig``. Expert counts follow Megatron's convention: ``num_moe_experts`` counts *routed*
experts only (shared experts run as Megatron's shared-expert module), ``moe_router_topk`` counts routed
experts per token (the paper's k − S).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelSize:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    num_moe_experts: int
    moe_router_topk: int
    moe_ffn_hidden_size: int
    vocab_size: int
    seq_length: int
    rotary_base: int = 500_000
    norm_epsilon: float = 1e-6
    qk_layernorm: bool = False
    num_shared_experts: int = 1
    pool_min: int = 8
    pool_max: int = 128
    pool_eval: int = 32
    lb_coeff: float = 0.1
    z_loss_coeff: float = 0.001
    max_documents_per_sequence: int = 256

    def transformer_kwargs(self) -> dict:
        """Megatron ``TransformerConfig`` fields fixed by the shape (parallelism/precision come from elsewhere)."""
        return dict(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_query_groups=self.num_query_groups,
            ffn_hidden_size=self.moe_ffn_hidden_size,
            num_moe_experts=self.num_moe_experts,
            moe_router_topk=self.moe_router_topk,
            moe_ffn_hidden_size=self.moe_ffn_hidden_size,
            normalization="RMSNorm",
            layernorm_epsilon=self.norm_epsilon,
            qk_layernorm=self.qk_layernorm,
            gated_linear_unit=True,  # SwiGLU experts
            activation_func=torch.nn.functional.silu,
            add_bias_linear=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            moe_router_dtype="fp32",
        )

    def emo_kwargs(self) -> dict:
        """``EmoRouterConfig`` fields fixed by the recipe."""
        return dict(
            pool_min=self.pool_min,
            pool_max=self.pool_max,
            pool_eval=self.pool_eval,
            num_shared_experts=self.num_shared_experts,
            lb_coeff=self.lb_coeff,
            z_loss_coeff=self.z_loss_coeff,
            max_documents_per_sequence=self.max_documents_per_sequence,
        )


_EMO_1B14B = ModelSize(
    # AI2's EMO-1B/14B (docs/method.md §11): OLMoE-1B-7B shape, 128 expert slots = 127 routed + 1 shared,
    # k = 8 incl. the shared expert, MHA, RMSNorm 1e-6, no QK norm, RoPE θ 500k, vocab 100352 (padded).
    num_layers=16,
    hidden_size=2048,
    num_attention_heads=16,
    num_query_groups=16,
    num_moe_experts=127,
    moe_router_topk=7,
    moe_ffn_hidden_size=1024,
    vocab_size=100_352,
    seq_length=4096,
    pool_min=8,
    pool_max=128,
    pool_eval=32,
)

SIZES: dict[str, ModelSize] = {
    # CPU / CI: trains in minutes on two cores.
    "tiny": ModelSize(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=4,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=64,
        vocab_size=4096,
        seq_length=128,
        pool_min=2,
        pool_max=8,
        pool_eval=4,
        max_documents_per_sequence=64,
    ),
    # One-GPU smoke test of the GPU path (TE, grouped GEMM, alltoall).
    "small": ModelSize(
        num_layers=8,
        hidden_size=512,
        num_attention_heads=8,
        num_query_groups=8,
        num_moe_experts=32,
        moe_router_topk=4,
        moe_ffn_hidden_size=512,
        vocab_size=32_768,
        seq_length=1024,
        pool_min=4,
        pool_max=32,
        pool_eval=8,
    ),
    "emo_1b14b": _EMO_1B14B,
    # The matched standard MoE: same shape, pools never restrict (pool ≥ routed experts).
    "stdmoe_1b14b": dataclasses.replace(_EMO_1B14B, pool_min=128, pool_max=128, pool_eval=128),
}


def get_model_size(name: str) -> ModelSize:
    try:
        return SIZES[name]
    except KeyError:
        raise KeyError(f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}") from None
