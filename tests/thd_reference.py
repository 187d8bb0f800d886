"""Test-only stand-in for Transformer Engine's thd attention on CPU (Megatron's local attention refuses packed
sequences; TE needs a GPU): causal attention within each ``cu_seqlens`` span, by plain SDPA."""

from __future__ import annotations

import torch


def dense_mask(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[T, T] True = masked: causal within each packed sequence, nothing across sequences."""
    total = int(cu_seqlens[-1])
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    sequence = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1, device=cu_seqlens.device), lengths)
    causal = torch.ones(total, total, dtype=torch.bool, device=cu_seqlens.device).tril()
    return ~((sequence[:, None] == sequence[None, :]) & causal)


class ThdReferenceAttention(torch.nn.Module):
    """Wraps a model's core attention: packed (thd) calls are computed here, all others go to the wrapped one."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is None:
            return self.wrapped(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                                attention_bias=attention_bias)
        q, k, v = (t.permute(1, 0, 2)[None] for t in (query, key, value))  # [T, heads, d] -> [1, heads, T, d]
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask = dense_mask(packed_seq_params.cu_seqlens_q_padded)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~mask,
                                                               scale=self.wrapped.softmax_scale)
        return out[0].permute(1, 0, 2).reshape(q.shape[2], -1)


def with_thd_reference_attention(model) -> None:
    """Every decoder layer of ``model`` (a GPTModel) gets the stand-in around its core attention."""
    for layer in model.decoder.layers:
        layer.self_attention.core_attention = ThdReferenceAttention(layer.self_attention.core_attention)
