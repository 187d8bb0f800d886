"""EMO document pools as pure tensor functions (no Megatron dependency).

Per layer (docs/method.md §4): each document sums its tokens' softmax router probabilities; its pool is the
top-P routed experts by that sum; every token then picks its top-k experts by the softmax over its document's
pool (``router.py``: Megatron's ``topk_routing_with_score_function`` on the logits masked here). Everything is
batched over documents with a fixed-size table of document slots, so there is no loop over documents or tokens
and no host synchronisation.

Rank-limited pools (``RankLimit``) draw a document's pool only from its best few contiguous expert groups, one
group per expert-parallel rank, so its tokens reach at most that many ranks in the dispatch.

Document slots: token t of sequence b with segment s (1-based, 0 = padding) uses slot ``b * (D + 1) + s`` of a
table with ``B * (D + 1)`` rows, D = max documents per sequence. Slot ``b * (D + 1)`` collects padding tokens
and gets an unrestricted pool (``with_unrestricted_padding``), so padding tokens are routed (dispatchers need
exactly k experts per token) but do not influence any document's pool.

Expert counts: E expert slots (the router's rows, Megatron's ``num_moe_experts``) = R routed experts (the
selectable ones, ``num_selectable``) + the trailing inert padding slots, which are never in any pool. Shape
suffixes: T tokens, N document slots, E expert slots, R routed experts, G expert groups, C statistic columns
(R summed probabilities, then the token count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

_GOLDEN = 0x9E3779B1
_MIX = 0x5BD1E995
_MERSENNE31 = (1 << 31) - 1


@dataclass(frozen=True)
class RankLimit:
    """Pools from at most ``max_groups`` of ``groups`` equal, contiguous blocks of the expert slots."""

    groups: int
    max_groups: int


def document_slots(segments_T: torch.Tensor, batch_size: int, max_documents: int) -> torch.Tensor:
    """Document slot of each token; tokens are in Megatron's router order (sequence-major: t = s·B + b)."""
    sequence_T = torch.arange(segments_T.numel(), device=segments_T.device) % batch_size
    return sequence_T * (max_documents + 1) + segments_T


def padding_slots(num_doc_slots: int, max_documents: int, device=None) -> torch.Tensor:
    """Bool [N]: the per-sequence document slots that collect padding tokens."""
    return torch.arange(num_doc_slots, device=device) % (max_documents + 1) == 0


def with_unrestricted_padding(pool_size_N: torch.Tensor, max_documents: int, num_selectable: int) -> torch.Tensor:
    """Pool sizes with every padding slot opened to all ``num_selectable`` routed experts."""
    is_padding_N = padding_slots(pool_size_N.shape[0], max_documents, pool_size_N.device)
    return pool_size_N.masked_fill(is_padding_N, num_selectable)


def draw_pool_sizes(
    salts_N: torch.Tensor, *, layer_number: int, seed: int, pool_min: int, pool_max: int
) -> torch.Tensor:
    """Uniform pool size in [pool_min, pool_max] per document, a pure function of (salt, layer, seed).

    Every rank that holds a piece of a document sees the same salt and so draws the same size; each layer
    draws independently, as each of AI2's routers samples its own.
    """
    key = (seed * 1_000_003 + layer_number * 7919) % _MERSENNE31
    x = (salts_N * _GOLDEN + key) % _MERSENNE31
    x = x ^ (x >> 13)
    x = (x * _MIX) % _MERSENNE31
    x = x ^ (x >> 15)
    return pool_min + x % (pool_max - pool_min + 1)


def document_pool_mask(scores_NR: torch.Tensor, pool_size_N: torch.Tensor | int) -> torch.Tensor:
    """Bool [N, R]: the ``pool_size_N[n]`` (or ``pool_size_N``) routed experts with the largest score per document
    slot (ties: lower index first). ``rank_limited_experts`` ranks expert groups [N, G] with it the same way."""
    num_candidates = scores_NR.shape[-1]
    order_NR = torch.argsort(scores_NR, dim=-1, descending=True, stable=True)
    rank_NR = torch.empty_like(order_NR)
    rank_NR.scatter_(-1, order_NR, torch.arange(num_candidates, device=order_NR.device).expand_as(order_NR))
    return rank_NR < (pool_size_N.unsqueeze(-1) if isinstance(pool_size_N, torch.Tensor) else pool_size_N)


def rank_limited_experts(doc_scores_NR: torch.Tensor, num_expert_slots: int, limit: RankLimit) -> torch.Tensor:
    """Bool [N, R]: the routed experts in each document slot's ``limit.max_groups`` groups of largest summed score
    (ties: lower group first). The groups tile the ``num_expert_slots`` expert slots, inert padding included."""
    num_doc_slots, num_selectable = doc_scores_NR.shape
    padded_NE = torch.nn.functional.pad(doc_scores_NR, (0, num_expert_slots - num_selectable))
    group_scores_NG = padded_NE.view(num_doc_slots, limit.groups, num_expert_slots // limit.groups).sum(-1)
    best_NG = document_pool_mask(group_scores_NG, limit.max_groups)
    return best_NG.repeat_interleave(num_expert_slots // limit.groups, dim=-1)[:, :num_selectable]


def pool_masked_logits(
    logits_TE: torch.Tensor,
    slots_T: torch.Tensor,
    pool_size_N: torch.Tensor,
    *,
    num_selectable: int,
    reduce_doc_stats: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank_limit: RankLimit | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask each token's logits to its document's pool.

    Returns (masked logits [T, E], pool mask per document slot [N, E], reduced per-slot statistics [N, C]: the
    summed probabilities of the R routed experts, then the token count). ``reduce_doc_stats`` sums the per-slot
    statistics over ranks holding other pieces of the same sequences (TP under sequence parallelism, CP) so all
    shards agree on each pool. The pool choice carries no gradient. The first ``num_selectable`` expert slots are
    the routed experts; the slots after them (inert padding) are never in any pool. With ``rank_limit`` a pool
    holds only experts of the slot's best groups, and so at most their routed experts.
    """
    num_tokens, num_expert_slots = logits_TE.shape
    num_doc_slots = pool_size_N.shape[0]
    with torch.no_grad():
        # float64 sums: CUDA's index_add_ accumulates in a run-dependent order, and in float64 that order can no
        # longer flip which expert is the P-th best, so an activation recompute chooses the same pools.
        probs_TR = torch.softmax(logits_TE[:, :num_selectable].double(), dim=-1)
        stats_TC = torch.cat([probs_TR, probs_TR.new_ones(num_tokens, 1)], dim=-1)
        doc_stats_NC = stats_TC.new_zeros(num_doc_slots, num_selectable + 1).index_add_(0, slots_T, stats_TC)
        if reduce_doc_stats is not None:
            doc_stats_NC = reduce_doc_stats(doc_stats_NC)
        pool_NE = torch.zeros(num_doc_slots, num_expert_slots, dtype=torch.bool, device=logits_TE.device)
        scores_NR = doc_stats_NC[:, :num_selectable]
        if rank_limit is None:
            pool_NE[:, :num_selectable] = document_pool_mask(scores_NR, pool_size_N)
        else:
            allowed_NR = rank_limited_experts(scores_NR, num_expert_slots, rank_limit)
            pool_NR = document_pool_mask(scores_NR.masked_fill(~allowed_NR, float("-inf")), pool_size_N)
            pool_NE[:, :num_selectable] = pool_NR & allowed_NR
        pool_TE = pool_NE.index_select(0, slots_T)
    masked_TE = logits_TE.masked_fill(~pool_TE, float("-inf"))
    return masked_TE, pool_NE, doc_stats_NC.float()
