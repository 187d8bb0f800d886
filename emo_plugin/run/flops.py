"""Training FLOPs per token, computed in the open (PaLM appendix B / nanoGPT ``estimate_mfu``), MoE-aware.

    flops/token = 6 · N_active + 12 · L · d · s

N_active counts the matmul weights a token actually uses: attention projections, the router, the *active*
experts only (top-k routed + shared, SwiGLU = 3 matrices each) and the output layer; the embedding lookup
is not a matmul. The second term is attention scores and values (forward 2·2·L·s·d, ×3 for backward),
without a causal discount, as in PaLM. Model FLOPs utilisation (MFU) = achieved / peak.
"""

from __future__ import annotations

import torch

from emo_plugin.model.record import ModelRecord

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "B200": 2250.0, "A100": 312.0}


def active_params_per_token(record: ModelRecord, vocab_size: int) -> int:
    d, heads, groups = record.hidden_size, record.num_attention_heads, record.num_query_groups
    head_dim = d // heads
    attention = d * heads * head_dim * 2 + d * groups * head_dim * 2  # q, o and k, v
    router = d * record.num_moe_experts
    experts = (record.moe_router_topk + record.num_shared_experts) * 3 * d * record.moe_ffn_hidden_size
    return record.num_layers * (attention + router + experts) + d * vocab_size


def flops_per_token(record: ModelRecord, vocab_size: int, seq_length: int) -> float:
    attention = 12.0 * record.num_layers * record.hidden_size * seq_length
    return 6.0 * active_params_per_token(record, vocab_size) + attention


def peak_tflops(configured: float | None, device: str) -> float | None:
    """Per-device peak for MFU: the configured value, else a known GPU's dense BF16 peak, else None."""
    if configured:
        return configured
    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)
    return None
