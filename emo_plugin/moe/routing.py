"""EMO document-pool routing as pure tensor functions (no Megatron dependency).

Per layer (docs/method.md §4): each document sums its tokens' softmax router probabilities; its pool is the
top-P experts by that sum; every token then picks its top-k experts by the softmax over its document's pool.
Everything is batched over documents with a fixed-size slot table, so there is no loop over documents or
tokens and no host synchronisation.

Rank-limited pools (``RankLimit``) draw a document's pool only from its best few contiguous expert groups, one
group per expert-parallel rank, so its tokens reach at most that many ranks in the dispatch.

Slots: token t of sequence b with segment s (1-based, 0 = padding) uses slot ``b * (D + 1) + s`` of a table
with ``B * (D + 1)`` rows, D = max documents per sequence. Slot ``b * (D + 1)`` collects padding tokens and
gets an unrestricted pool (``with_unrestricted_padding``), so padding tokens are routed (dispatchers need
exactly k experts per token) but do not influence any document's pool.
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
    """Pools from at most ``max_groups`` of ``groups`` equal, contiguous blocks of the router rows."""

    groups: int
    max_groups: int


@dataclass
class EmoRouting:
    probs_TE: torch.Tensor
    """Gate weights: the pool softmax at the chosen experts, zero elsewhere."""
    routing_map_TE: torch.Tensor
    """Bool, exactly ``topk`` True per token, all inside the token's pool."""
    masked_logits_TE: torch.Tensor
    """Router logits with −inf outside the token's pool (input of the gates and the z-loss)."""
    pool_NE: torch.Tensor
    """Bool pool membership per document slot."""
    doc_mass_N: torch.Tensor
    """Tokens per document slot (after ``reduce_doc_stats``), for statistics."""
    doc_scores_NE: torch.Tensor
    """Summed softmax probabilities per document slot (after ``reduce_doc_stats``)."""


def document_slots(segments_T: torch.Tensor, batch_size: int, max_documents: int) -> torch.Tensor:
    """Slot index of each token; tokens are in Megatron's router order (sequence-major: t = s·B + b)."""
    sequence_T = torch.arange(segments_T.numel(), device=segments_T.device) % batch_size
    return sequence_T * (max_documents + 1) + segments_T


def padding_slots(num_slots: int, max_documents: int, device=None) -> torch.Tensor:
    """Bool [N]: the per-sequence slots that collect padding tokens."""
    return torch.arange(num_slots, device=device) % (max_documents + 1) == 0


def with_unrestricted_padding(pool_size_N: torch.Tensor, max_documents: int, num_selectable: int) -> torch.Tensor:
    """Pool sizes with every padding slot opened to all selectable experts."""
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


def document_pool_mask(doc_scores_NE: torch.Tensor, pool_size_N: torch.Tensor | int) -> torch.Tensor:
    """The ``pool_size_N[n]`` (or ``pool_size_N``) experts with the largest score per slot (ties: lower index first)."""
    num_experts = doc_scores_NE.shape[-1]
    order_NE = torch.argsort(doc_scores_NE, dim=-1, descending=True, stable=True)
    rank_NE = torch.empty_like(order_NE)
    rank_NE.scatter_(-1, order_NE, torch.arange(num_experts, device=order_NE.device).expand_as(order_NE))
    return rank_NE < (pool_size_N.unsqueeze(-1) if isinstance(pool_size_N, torch.Tensor) else pool_size_N)


def rank_limited_experts(doc_scores_NR: torch.Tensor, num_experts: int, limit: RankLimit) -> torch.Tensor:
    """Bool [N, R]: the selectable experts in each slot's ``limit.max_groups`` groups of largest summed score
    (ties: lower group first). ``num_experts`` counts the router rows, inert padding included."""
    num_slots, selectable = doc_scores_NR.shape
    padded_NE = torch.nn.functional.pad(doc_scores_NR, (0, num_experts - selectable))
    group_scores_NG = padded_NE.view(num_slots, limit.groups, num_experts // limit.groups).sum(-1)
    best_NG = document_pool_mask(group_scores_NG, limit.max_groups)
    return best_NG.repeat_interleave(num_experts // limit.groups, dim=-1)[:, :selectable]


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

    Returns (masked logits, pool mask per slot, reduced per-slot stats [scores..., token count]).
    ``reduce_doc_stats`` sums the per-slot statistics over ranks holding other pieces of the same sequences
    (TP under sequence parallelism, CP) so all shards agree on each pool. The pool choice carries no gradient.
    Experts at index ≥ ``num_selectable`` (inert padding slots) are never in any pool. With ``rank_limit`` a pool
    holds only experts of the slot's best groups, and so at most their selectable experts.
    """
    num_tokens, num_experts = logits_TE.shape
    num_slots = pool_size_N.shape[0]
    with torch.no_grad():
        # float64 sums: CUDA's index_add_ accumulates in a run-dependent order, and in float64 that order can no
        # longer flip which expert is the P-th best, so an activation recompute chooses the same pools.
        probs_TR = torch.softmax(logits_TE[:, :num_selectable].double(), dim=-1)
        stats_TS = torch.cat([probs_TR, probs_TR.new_ones(num_tokens, 1)], dim=-1)
        doc_stats_NS = stats_TS.new_zeros(num_slots, num_selectable + 1).index_add_(0, slots_T, stats_TS)
        if reduce_doc_stats is not None:
            doc_stats_NS = reduce_doc_stats(doc_stats_NS)
        pool_NE = torch.zeros(num_slots, num_experts, dtype=torch.bool, device=logits_TE.device)
        scores_NR = doc_stats_NS[:, :num_selectable]
        if rank_limit is None:
            pool_NE[:, :num_selectable] = document_pool_mask(scores_NR, pool_size_N)
        else:
            allowed_NR = rank_limited_experts(scores_NR, num_experts, rank_limit)
            pool_NR = document_pool_mask(scores_NR.masked_fill(~allowed_NR, float("-inf")), pool_size_N)
            pool_NE[:, :num_selectable] = pool_NR & allowed_NR
        pool_TE = pool_NE.index_select(0, slots_T)
    masked_TE = logits_TE.masked_fill(~pool_TE, float("-inf"))
    return masked_TE, pool_NE, doc_stats_NS.float()


def topk_gates(masked_logits_TE: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of the pool softmax; gates are the chosen probabilities (not renormalised)."""
    scores_TE = torch.softmax(masked_logits_TE, dim=-1, dtype=torch.float32).type_as(masked_logits_TE)
    gates_TK, experts_TK = torch.topk(scores_TE, k=topk, dim=-1)
    probs_TE = torch.zeros_like(scores_TE).scatter(1, experts_TK, gates_TK)
    routing_map_TE = torch.zeros_like(scores_TE, dtype=torch.bool).scatter(1, experts_TK, True)
    return probs_TE, routing_map_TE


def emo_route(
    logits_TE: torch.Tensor,
    slots_T: torch.Tensor,
    pool_size_N: torch.Tensor,
    *,
    topk: int,
    num_selectable: int | None = None,
    reduce_doc_stats: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EmoRouting:
    """The whole EMO routing step: document pools, then top-k gates inside each pool."""
    num_selectable = logits_TE.shape[-1] if num_selectable is None else num_selectable
    masked_TE, pool_NE, doc_stats_NS = pool_masked_logits(
        logits_TE, slots_T, pool_size_N, num_selectable=num_selectable, reduce_doc_stats=reduce_doc_stats
    )
    probs_TE, routing_map_TE = topk_gates(masked_TE, topk)
    return EmoRouting(
        probs_TE=probs_TE,
        routing_map_TE=routing_map_TE,
        masked_logits_TE=masked_TE,
        pool_NE=pool_NE,
        doc_mass_N=doc_stats_NS[:, -1],
        doc_scores_NE=doc_stats_NS[:, :-1],
    )
