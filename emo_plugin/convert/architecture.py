"""One description of an EMO model's shape, and its translations to Megatron and Hugging Face configs.

The two worlds count experts differently (docs/method.md §2, config.py):
Megatron ``num_moe_experts`` = routed router rows (incl. inert padding), shared experts are one wide
``shared_experts`` MLP, ``moe_router_topk`` = routed experts per token; HF ``num_experts`` = all slots incl. the
shared ones (the LAST slots), ``num_experts_per_tok`` = k incl. shared. Inert experts exist only in Megatron.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from emo_plugin.errors import ConversionError


@dataclass(frozen=True)
class EmoArchitecture:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    moe_ffn_hidden_size: int
    num_routed_experts: int
    """Selectable routed experts (R); Megatron's router has R + num_inert_experts rows."""
    routed_per_token: int
    num_shared_experts: int
    vocab_size: int
    num_inert_experts: int = 0
    rotary_base: float = 500_000.0
    norm_epsilon: float = 1e-6
    eos_token_id: int | None = 100257
    pad_token_id: int | None = 100277
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def megatron_experts(self) -> int:
        return self.num_routed_experts + self.num_inert_experts

    def with_inert_padding(self, expert_parallel_size: int) -> "EmoArchitecture":
        """Pad the routed experts with inert ones to a multiple of ``expert_parallel_size``."""
        inert = -self.num_routed_experts % expert_parallel_size
        return dataclasses.replace(self, num_inert_experts=inert)

    # -- Hugging Face ---------------------------------------------------------------------------------
    def hf_config_kwargs(self) -> dict:
        return dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.moe_ffn_hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_query_groups,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.norm_epsilon,
            rope_theta=float(self.rotary_base),
            num_experts=self.num_routed_experts + self.num_shared_experts,
            num_experts_per_tok=self.routed_per_token + self.num_shared_experts,
            num_shared_experts=self.num_shared_experts,
            norm_topk_prob=False,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            tie_word_embeddings=False,
        )

    @classmethod
    def from_hf_config(cls, config) -> "EmoArchitecture":
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
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
        return cls(
            num_layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            num_query_groups=config.num_key_value_heads,
            moe_ffn_hidden_size=config.intermediate_size,
            num_routed_experts=slots - shared,
            routed_per_token=config.num_experts_per_tok - shared,
            num_shared_experts=shared,
            vocab_size=config.vocab_size,
            rotary_base=float(config.rope_theta),
            norm_epsilon=config.rms_norm_eps,
            eos_token_id=eos,
            pad_token_id=config.pad_token_id,
            max_position_embeddings=config.max_position_embeddings,
        )

    # -- Megatron -------------------------------------------------------------------------------------
    def transformer_config(self, *, params_dtype=torch.float32, pool_eval: int | None = None, **overrides):
        """An ``EmoTransformerConfig`` of this shape (host defaults: fp32, allgather, CPU init, no dropout).

        ``pool_eval`` defaults to "unrestricted" (all routed experts), the routing of the HF model.
        """
        from emo_plugin.moe.config import EmoRouterConfig, EmoTransformerConfig
        from emo_plugin.model.sizes import ModelSize

        pool_all = self.megatron_experts
        size = ModelSize(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_query_groups=self.num_query_groups,
            num_moe_experts=self.megatron_experts,
            moe_router_topk=self.routed_per_token,
            moe_ffn_hidden_size=self.moe_ffn_hidden_size,
            vocab_size=self.vocab_size,
            seq_length=self.max_position_embeddings,
            rotary_base=int(self.rotary_base),
            norm_epsilon=self.norm_epsilon,
            num_shared_experts=self.num_shared_experts,
            pool_min=self.routed_per_token,
            pool_max=pool_all,
            pool_eval=pool_eval or pool_all,
        )
        kwargs = size.transformer_kwargs() | dict(
            use_cpu_initialization=True,
            params_dtype=params_dtype,
            bf16=params_dtype == torch.bfloat16,
            moe_token_dispatcher_type="allgather",
        )
        kwargs.update(overrides)
        emo = EmoRouterConfig(**size.emo_kwargs(), num_inert_experts=self.num_inert_experts)
        return EmoTransformerConfig(**kwargs, emo=emo)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "EmoArchitecture":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ConversionError(f"unknown architecture fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)
