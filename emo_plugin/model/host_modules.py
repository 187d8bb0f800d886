"""Megatron modules for host (CPU) execution, as subclasses rather than patches.

Megatron's local attention and RoPE assume a CUDA device (a global CUDA memory buffer, the CUDA RNG tracker,
``inv_freq.to(cuda)``). The embedded default and CI run the *same* GPTModel on CPU; these two subclasses
replace exactly those CUDA-only steps and nothing else. GPU runs use Megatron's modules unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.transformer.dot_product_attention import DotProductAttention

from emo_plugin.megatron_compat import mark_sequence_parallel, rotary_embedding_table


class HostDotProductAttention(DotProductAttention):
    """Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

    ``attention_mask`` is Megatron's bool mask (True = masked), e.g. block-diagonal causal for
    intra-document attention; without one, plain causal attention.
    """

    def forward(
        self,
        query,
        key,
        value,
        attention_mask,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("HostDotProductAttention supports neither packed sequences nor attention bias")
        # [s, b, heads, dim] -> [b, heads, s, dim]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        dropout = self.config.attention_dropout if self.training else 0.0
        if attention_mask is None:
            context = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, scale=self.softmax_scale
            )
        else:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=~attention_mask, dropout_p=dropout, scale=self.softmax_scale
            )
        seq, batch = context.shape[2], context.shape[0]
        return context.permute(2, 0, 1, 3).reshape(seq, batch, -1)


class HostRotaryEmbedding(RotaryEmbedding):
    """RoPE whose frequencies stay on the device of ``inv_freq`` instead of moving to CUDA."""

    def get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
        return rotary_embedding_table(self, max_seq_len, offset)

    @classmethod
    def like(cls, rope: RotaryEmbedding, config) -> "HostRotaryEmbedding":
        """A host copy of a GPTModel's RoPE module (same frequencies and options)."""
        host = cls(
            kv_channels=config.kv_channels,
            rotary_percent=1.0,
            rotary_interleaved=rope.rotary_interleaved,
            seq_len_interpolation_factor=rope.seq_len_interpolation_factor,
            use_cpu_initialization=True,
            cp_group=rope.cp_group,
        )
        host.inv_freq = rope.inv_freq.detach().cpu().clone()
        return host


class HostNorm:
    """Torch ``RMSNorm``/``LayerNorm`` that also works under sequence parallelism (host execution).

    Megatron's ``WrappedTorchNorm`` refuses ``config.sequence_parallel``, which rules out GPTModel + MoE + TP on
    the host (MoE with TP requires SP). Under SP a norm sees only this rank's sequence chunk, so, like TE's norm,
    its parameters are marked sequence-parallel (``megatron_compat.mark_sequence_parallel``) and
    ``finalize_model_grads`` sums their gradients over the TP group.
    """

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **unused_megatron_kwargs) -> torch.nn.Module:
        if config.layernorm_zero_centered_gamma or config.persist_layer_norm or config.memory_efficient_layer_norm:
            raise ValueError("HostNorm supports neither zero-centred gamma, persistent nor memory-efficient norms")
        norm_classes = {"RMSNorm": torch.nn.RMSNorm, "LayerNorm": torch.nn.LayerNorm}
        if config.normalization not in norm_classes:
            raise ValueError(f"HostNorm supports {sorted(norm_classes)}, not {config.normalization!r}")
        norm = norm_classes[config.normalization](hidden_size, eps=eps)
        mark_sequence_parallel(norm, config.sequence_parallel)
        return norm
