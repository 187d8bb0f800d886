"""Activation memory per micro-batch: the tensors autograd keeps between a layer's forward and its backward.

Method: Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models" (2022, §4), which
counts every tensor a layer saves for its backward, per token, and divides the sequence-parallel (SP) and
tensor-parallel (TP) parts by t. Their 34·s·b·h (GPT, GeLU MLP, dropout, no flash attention) is adapted here to
this model: RMSNorm, no dropout, RoPE, GQA, flash/fused attention (no s² scores), SwiGLU experts and MoE routing.
Per token, per layer, in elements (e bytes each; the router works in fp32):

    attention  n·h (norm input/output)  + 3·(a + g)·h_d   (rotated q and k, the q|k|v projection output that
               v still views, the attention output, which is also the output projection's input)
    MoE        n·h (norm input/output)  + 6·E fp32 (logits, pool mask, softmax, top-k scores)
               + k·(h + c·f) routed (dispatched token copy, SwiGLU intermediates) + S·(x·h + c·f) shared

with n, c, x per implementation (``Implementation``): the fused GPU path (Transformer Engine norms and
grouped-GEMM experts with the probability-weighted SwiGLU) keeps n = 2, c = 3, x = 0; the host path (plain
``torch.nn.RMSNorm``, ``SequentialMLP``, unfused SwiGLU) keeps n = 3, c = 6, x = 1, counted from its autograd
graph; Megatron's local GPU layers are counted like the host plus the a·s softmax probabilities per token
(both keep the norm tensors in fp32: ``torch.nn.RMSNorm``'s fp32 weight promotes bf16 inputs).
The last stage adds the final norm and the fp32 logits of the vocabulary-parallel cross entropy (V/t).
Selective MoE recompute (``model.recompute_moe``) keeps only each MoE layer's input and re-materialises one
layer's MoE tensors during its backward. A 1F1B pipeline stage r holds min(pp − r, micro-batches) micro-batches;
with v virtual stages (interleaved 1F1B) it holds 2·(pp − r − 1) + (v − 1)·pp + 1 model chunks of L/(pp·v)
layers (Megatron's warm-up count + 1), which for r = 0 is Korthikanti's L·(1 + (pp − 1)/(pp·v)) layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from emo_plugin.model.record import ModelRecord
from emo_plugin.run.layout import Layout

FP32 = 4
ROUTER_FP32_ROWS = 6


@dataclass(frozen=True)
class Implementation:
    """How many copies of each activation an implementation saves (see the module docstring)."""

    name: str
    norm_copies: int
    swiglu_copies: int
    shared_input_copy: int
    score_copies: int = 0  # a·s softmax probabilities per token kept by non-flash attention
    fp32_norms: bool = False  # torch.nn.RMSNorm with fp32 weights returns fp32 even for bf16 inputs


FUSED_GPU = Implementation("fused GPU (Transformer Engine)", norm_copies=2, swiglu_copies=3, shared_input_copy=0)
HOST = Implementation("host (plain PyTorch)", norm_copies=3, swiglu_copies=6, shared_input_copy=1, fp32_norms=True)
# GPU with model.transformer_impl=local: PyTorch layers as on the host, but Megatron's DotProductAttention keeps
# the softmax probabilities [b, a, s, s] for the probs × V backward (Korthikanti's 5·a·s/h term without dropout).
LOCAL_GPU = Implementation("GPU, Megatron local layers", norm_copies=3, swiglu_copies=6, shared_input_copy=1,
                           score_copies=1, fp32_norms=True)


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes of one rank: what one micro-batch keeps, and the peak over the step for its pipeline stage."""

    per_micro_batch: int
    per_micro_batch_recompute: int
    in_flight: float
    peak: int
    peak_recompute: int


def _per_token_layer(record: ModelRecord, layout: Layout, impl: Implementation,
                     elem: int) -> tuple[float, float, float]:
    """Bytes per token of one layer on one rank: (attention + MoE norms kept always, MoE internals, MoE input)."""
    h, f, tp = record.hidden_size, record.moe_ffn_hidden_size, layout.tp
    sp = tp if layout.sequence_parallel else 1
    head_dim = h // record.num_attention_heads
    norm = impl.norm_copies * h / sp * (FP32 / elem if impl.fp32_norms else 1)
    attention = norm + 3 * (record.num_attention_heads + record.num_query_groups) * head_dim / tp
    attention += impl.score_copies * record.num_attention_heads * record.seq_length / layout.cp / tp
    moe_norm = norm
    routed = record.moe_router_topk * layout.etp / sp * (h + impl.swiglu_copies * f / layout.etp)
    shared = record.num_shared_experts * (impl.shared_input_copy * h + impl.swiglu_copies * f / tp)
    router = ROUTER_FP32_ROWS * record.num_moe_experts * FP32 / sp
    return (attention + moe_norm) * elem, (routed + shared) * elem + router, h / sp * elem


def in_flight(layout: Layout, stage: int, num_micro_batches: int, virtual_stages: int) -> float:
    """Micro-batches' worth of this stage's layers held at the 1F1B peak (fractional when interleaved)."""
    if virtual_stages <= 1 or layout.pp == 1:
        return min(layout.pp - stage, num_micro_batches)
    chunks = 2 * (layout.pp - stage - 1) + (virtual_stages - 1) * layout.pp + 1
    return min(chunks, num_micro_batches * virtual_stages) / virtual_stages


def activation_memory(record: ModelRecord, vocab_size: int, layout: Layout, *, stage: int, micro_batch_size: int,
                      num_micro_batches: int, layers: int, impl: Implementation, elem: int,
                      virtual_stages: int = 1, dense_mask: bool = False) -> ActivationMemory:
    """``dense_mask``: the host path's intra-document attention, a [b, 1, s, s] bool mask per micro-batch; the
    trainer collates a step's micro-batches up front, so all of them are held."""
    tokens = micro_batch_size * record.seq_length // layout.cp
    mask = micro_batch_size * record.seq_length**2 if dense_mask else 0
    kept, moe_internal, _ = _per_token_layer(record, layout, impl, elem)
    sp = layout.tp if layout.sequence_parallel else 1
    last = stage == layout.pp - 1
    norm_elem = FP32 if impl.fp32_norms else elem
    head = (impl.norm_copies * record.hidden_size / sp * norm_elem + vocab_size / layout.tp * FP32) if last else 0.0
    logits_transient = vocab_size / layout.tp * elem if last else 0.0
    full = tokens * (layers * (kept + moe_internal) + head)
    recompute = tokens * (layers * kept + head)
    held = in_flight(layout, stage, num_micro_batches, virtual_stages)
    return ActivationMemory(
        per_micro_batch=int(full) + mask,
        per_micro_batch_recompute=int(recompute) + mask,
        in_flight=held,
        peak=int(held * full + tokens * logits_transient) + num_micro_batches * mask,
        peak_recompute=int(held * recompute + tokens * (moe_internal + logits_transient)) + num_micro_batches * mask,
    )
