"""Which expert-parallel rank should hold which expert, so that documents keep their routing choices on one rank.

EMO documents use a small, recurring set of experts per layer. Placed side by side on one rank, the experts a
domain uses let a deduplicating dispatcher (and rank-limited pools) send a document's tokens to fewer ranks.
The objective, per layer: the (token, choice) assignments each document keeps on its best rank,

    kept = Σ_d max_p Σ_{e on p} slots[d, e]   /   Σ_{d, e} slots[d, e],

subject to every rank holding exactly its share of the experts. It is maximised by alternating two exact steps
(each never lowers it): send each document to its best rank under the current placement, then place the experts
by an optimal balanced assignment (Hungarian method over rank seats) for those homes; from the current order and
from random starts, keeping the best. Inputs are per-document slot counts, as ``emo-analyze-modularity`` writes
them (``document_usage.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from emo_plugin.expert_blocks import selectable_per_block


def rank_capacities(num_selectable: int, num_ranks: int) -> list[int]:
    """Selectable experts on each EP rank once the routed experts are padded to a multiple of ``num_ranks``
    with trailing inert slots (the last ranks hold fewer)."""
    return selectable_per_block(num_ranks * -(-num_selectable // num_ranks), num_selectable, num_ranks)


def contiguous_ranks(capacities: list[int]) -> np.ndarray:
    """Rank of each expert in Megatron's layout: the first ``capacities[0]`` on rank 0, and so on."""
    return np.repeat(np.arange(len(capacities)), capacities)


def kept_share(slots_NR: np.ndarray, rank_of_R: np.ndarray, num_ranks: int) -> float:
    """Share of all routing choices that their document keeps on its best rank."""
    per_rank_NP = slots_NR @ np.eye(num_ranks)[rank_of_R]
    total = slots_NR.sum()
    return float(per_rank_NP.max(axis=1).sum() / total) if total else 0.0


def _improve(slots_NR: np.ndarray, rank_of_R: np.ndarray, seats: np.ndarray, num_ranks: int) -> np.ndarray:
    score = kept_share(slots_NR, rank_of_R, num_ranks)
    for _ in range(100):
        home_N = (slots_NR @ np.eye(num_ranks)[rank_of_R]).argmax(axis=1)
        gain_RP = slots_NR.T @ np.eye(num_ranks)[home_N]  # slots of documents homed on p that expert e serves
        experts, seat = linear_sum_assignment(gain_RP[:, seats], maximize=True)
        candidate = seats[seat[np.argsort(experts)]]
        new_score = kept_share(slots_NR, candidate, num_ranks)
        if new_score <= score + 1e-12:
            break
        rank_of_R, score = candidate, new_score
    return rank_of_R


def place_layer(slots_NR: np.ndarray, capacities: list[int], *, restarts: int = 8, seed: int = 0) -> np.ndarray:
    """The EP rank of each routed expert of one layer (``capacities[p]`` experts on rank p)."""
    seats = contiguous_ranks(capacities)
    if seats.size != slots_NR.shape[1]:
        raise ValueError(f"capacities hold {seats.size} experts, the usage has {slots_NR.shape[1]}")
    num_ranks = len(capacities)
    rng = np.random.default_rng(seed)
    starts = [seats] + [rng.permutation(seats) for _ in range(restarts)]
    placements = [_improve(slots_NR, start, seats, num_ranks) for start in starts]
    return max(placements, key=lambda rank_of: kept_share(slots_NR, rank_of, num_ranks))


def slot_order(rank_of_R: np.ndarray) -> list[int]:
    """New slot → old expert: rank 0's experts first, each rank's in their old order, so that rank p's
    contiguous block of slots holds exactly the experts placed on p."""
    return [int(e) for e in np.lexsort((np.arange(rank_of_R.size), rank_of_R))]


@dataclass(frozen=True)
class LayerPlacement:
    order: list[int]
    """New routed-expert index → old routed expert (a permutation of the selectable experts)."""
    kept_before: float
    """Kept share with the checkpoint's own order."""
    kept_after: float
    kept_random: float
    """Mean kept share of random balanced placements: what an arbitrary order gives."""


def place_experts(slots_per_layer: list[np.ndarray], num_ranks: int, *, restarts: int = 8,
                  seed: int = 0) -> list[LayerPlacement]:
    """A placement per layer from each layer's per-document slot counts [documents, routed experts]."""
    result = []
    for layer, slots_NR in enumerate(slots_per_layer):
        capacities = rank_capacities(slots_NR.shape[1], num_ranks)
        seats = contiguous_ranks(capacities)
        rank_of_R = place_layer(slots_NR, capacities, restarts=restarts, seed=seed + layer)
        order = slot_order(rank_of_R)
        rng = np.random.default_rng(seed + 10_000 + layer)
        random = np.mean([kept_share(slots_NR, rng.permutation(seats), num_ranks) for _ in range(32)])
        result.append(LayerPlacement(
            order=order,
            kept_before=kept_share(slots_NR, seats, num_ranks),
            kept_after=kept_share(slots_NR[:, order], seats, num_ranks),
            kept_random=float(random),
        ))
    return result
