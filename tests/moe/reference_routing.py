"""Reference routing for the tests: the whole EMO routing step as pure functions, and a per-document loop.

``emo_route`` is the library's document pools (``emo_plugin.moe.routing.pool_masked_logits``) followed by plain
top-k gates over the pool softmax (``topk_gates``); ``EmoRouter`` gets the same gates from Megatron's
``topk_routing_with_score_function``. ``reference_route`` is the method as written in docs/method.md §4, a loop
over sequences and documents with no batching at all.

Shape suffixes as in the library: T tokens, S sequence positions, B sequences, N document slots, E expert slots
(routed + inert), R routed experts, K top-k choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from emo_plugin.moe.routing import pool_masked_logits


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
    doc_scores_NR: torch.Tensor
    """Summed softmax probabilities of the routed experts per document slot (after ``reduce_doc_stats``)."""


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
    masked_TE, pool_NE, doc_stats_NC = pool_masked_logits(
        logits_TE, slots_T, pool_size_N, num_selectable=num_selectable, reduce_doc_stats=reduce_doc_stats
    )
    probs_TE, routing_map_TE = topk_gates(masked_TE, topk)
    return EmoRouting(
        probs_TE=probs_TE,
        routing_map_TE=routing_map_TE,
        masked_logits_TE=masked_TE,
        pool_NE=pool_NE,
        doc_mass_N=doc_stats_NC[:, -1],
        doc_scores_NR=doc_stats_NC[:, :-1],
    )


def reference_route(logits_SBE, segments_SB, pool_size_fn, topk, num_selectable):
    """Loop over sequences and documents: the method as written in docs/method.md §4."""
    seq, batch, num_expert_slots = logits_SBE.shape
    probs = torch.zeros(seq, batch, num_expert_slots)
    chosen = torch.zeros(seq, batch, num_expert_slots, dtype=torch.bool)
    pools = {}
    for b in range(batch):
        for doc in segments_SB[:, b].unique().tolist():
            rows = (segments_SB[:, b] == doc).nonzero().flatten()
            logits = logits_SBE[rows, b]
            if doc == 0:
                pool = torch.arange(num_selectable)
            else:
                score = torch.softmax(logits[:, :num_selectable], dim=-1).sum(0)
                size = min(pool_size_fn(b, doc), num_selectable)
                pool = sorted(range(num_selectable), key=lambda e: (-score[e].item(), e))[:size]
                pool = torch.tensor(pool)
                pools[(b, doc)] = set(pool.tolist())
            masked = torch.full_like(logits, float("-inf"))
            masked[:, pool] = logits[:, pool]
            scores = torch.softmax(masked, dim=-1)
            for i, row in enumerate(rows.tolist()):
                top = torch.topk(scores[i], topk).indices
                probs[row, b, top] = scores[i, top]
                chosen[row, b, top] = True
    return probs.view(-1, num_expert_slots), chosen.view(-1, num_expert_slots), pools


def random_segments(seq, batch, max_docs, generator, pad_tail):
    """Sorted random document cuts per sequence, optionally a padded tail (segment 0)."""
    segments = torch.zeros(seq, batch, dtype=torch.long)
    for b in range(batch):
        num_docs = int(torch.randint(1, max_docs + 1, (1,), generator=generator))
        cuts = torch.sort(torch.randperm(seq - 1, generator=generator)[: num_docs - 1] + 1).values
        starts = torch.zeros(seq, dtype=torch.long)
        starts[cuts] = 1
        segments[:, b] = torch.cumsum(starts, 0) + 1
        if pad_tail and b % 2 == 1:
            segments[seq - 3 :, b] = 0
    return segments
