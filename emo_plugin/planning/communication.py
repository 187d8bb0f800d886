"""Bytes each rank sends per optimizer step, per collective (ring / pairwise algorithms, bandwidth term only).

A ring reduce-scatter or all-gather of N bytes over n ranks sends (n − 1)/n · N per rank, an all-reduce twice
that. The MoE dispatcher is dropless (EMO refuses a capacity factor), so every token's k routed copies travel;
with balanced routing (ep − 1)/ep of them leave the rank, once to dispatch and once to combine, in the forward
and again in the backward. Megatron's sequence parallelism replaces each TP all-reduce by an all-gather plus a
reduce-scatter of the same total volume: attention and the shared expert each do one pair per layer forward and
one backward. Context parallelism passes K and V around a ring (forward, and K, V and their gradients backward).
Pipeline stages exchange one activation per micro-batch and model chunk each way.

Megatron's all-to-all dispatcher (what emo-pretrain runs) sends one copy per (token, expert), so neither expert
placement nor rank-limited pools change its bytes. A dispatcher that sends a token once per destination rank
(DeepEP, Megatron's ``flex``) sends, with balanced routing, r·(1 − C(n − e, k) / C(n, k))·(ep − 1)/ep copies per
token: k experts drawn from the n = r·e experts of the r ranks a token may reach (all ep, or those of its
document's ``emo.pool_max_ranks`` groups), e experts per rank; that line shows what the limit saves. Placement's
saving depends on the data: docs/expert_parallel.md measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emo_plugin.model.record import ModelRecord
from emo_plugin.planning.model_states import FP32, GRAD_REDUCE_IN_FP32
from emo_plugin.planning.parameters import ParameterCount
from emo_plugin.run.layout import Layout


@dataclass(frozen=True)
class Collective:
    name: str
    group_size: int
    bytes_per_step: int


def _ring(n: int) -> float:
    return (n - 1) / n if n > 1 else 0.0


def deduplicated_copies(record: ModelRecord, ep: int) -> float:
    """Expected off-rank destination ranks per token under a per-rank deduplicating dispatcher."""
    if ep < 2:
        return 0.0
    reach = ep
    if record.pool_max_ranks is not None:
        reach = min(ep, record.pool_max_ranks * max(1, ep // record.pool_rank_groups))
    per_rank, k = record.num_moe_experts // ep, record.moe_router_topk
    missed = math.comb(reach * per_rank - per_rank, k) / math.comb(reach * per_rank, k)
    return reach * (1 - missed) * _ring(ep)


def _gradient_sync(label: str, numel: int, n: int, param_bytes: int, distributed: bool) -> list[Collective]:
    grad_bytes = FP32 if GRAD_REDUCE_IN_FP32 else param_bytes
    if distributed:
        return [Collective(f"{label} grad reduce-scatter", n, int(_ring(n) * numel * grad_bytes)),
                Collective(f"{label} param all-gather", n, int(_ring(n) * numel * param_bytes))]
    return [Collective(f"{label} grad all-reduce", n, int(2 * _ring(n) * numel * grad_bytes))]


def communication(record: ModelRecord, layout: Layout, params: ParameterCount, *, stage: int, layers: int,
                  micro_batch_size: int, num_micro_batches: int, elem: int, distributed_optimizer: bool,
                  param_bytes: int, virtual_stages: int = 1) -> list[Collective]:
    """Per-step traffic of one rank on pipeline stage ``stage``; collectives of size 1 are left out."""
    h, tp, m = record.hidden_size, layout.tp, num_micro_batches
    tokens = micro_batch_size * record.seq_length // layout.cp  # per rank before SP
    sp = tp if layout.sequence_parallel else 1
    out = _gradient_sync("DP dense", params.dense, layout.dense_grad_group, param_bytes, distributed_optimizer)
    out += _gradient_sync("expert-DP", params.expert, layout.expert_dp, param_bytes, distributed_optimizer)
    routed = tokens // sp * record.moe_router_topk * h * elem
    out.append(Collective("EP all-to-all (dispatch+combine, fwd+bwd)", layout.ep,
                          int(4 * _ring(layout.ep) * routed * layers * m)))
    out.append(Collective("  EP, deduplicated per rank (flex/DeepEP)", layout.ep,
                          int(4 * deduplicated_copies(record, layout.ep) * tokens // sp * h * elem * layers * m)))
    out.append(Collective("ETP all-gather/reduce-scatter", layout.etp,
                          int(4 * _ring(layout.etp) * routed * layout.etp * layers * m)))
    tp_pairs = 4 * layers + (2 if stage == 0 else 0) + (2 if stage == layout.pp - 1 else 0)
    out.append(Collective("TP/SP all-gather+reduce-scatter" if layout.sequence_parallel else "TP all-reduce", tp,
                          int(tp_pairs * _ring(tp) * tokens * h * elem * m)))
    head_dim = h // record.num_attention_heads
    kv = 2 * record.num_query_groups * head_dim // tp * tokens * elem
    out.append(Collective("CP ring K/V exchange (fwd+bwd)", layout.cp, int(3 * (layout.cp - 1) * kv * layers * m)))
    # each of the v model chunks of a rank passes activations on and gradients back, except at the model's ends
    boundaries = 2 * virtual_stages - (stage == 0) - (stage == layout.pp - 1)
    out.append(Collective("PP p2p activations+grads", layout.pp, int(boundaries * tokens // sp * h * elem * m)))
    return [c for c in out if c.group_size > 1 and c.bytes_per_step > 0]
