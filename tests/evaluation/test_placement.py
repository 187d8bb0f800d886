"""Expert placement: the search against brute force, and the bookkeeping of capacities and slot orders."""

import itertools

import numpy as np
import pytest

from emo_plugin.evaluation.placement import (
    contiguous_ranks,
    kept_share,
    place_experts,
    place_layer,
    rank_capacities,
    slot_order,
)


def brute_force_best(slots_DR: np.ndarray, capacities: list[int]) -> float:
    """Every balanced assignment of the experts to the ranks (small sizes only)."""
    num_experts, best = slots_DR.shape[1], 0.0
    for first in itertools.combinations(range(num_experts), capacities[0]):
        rank_of = np.ones(num_experts, dtype=int)
        rank_of[list(first)] = 0
        best = max(best, kept_share(slots_DR, rank_of, 2))
    return best


def domain_usage(num_docs: int, num_experts: int, num_domains: int, seed: int) -> np.ndarray:
    """Documents of a domain concentrate on a scattered set of experts, as EMO's do."""
    rng = np.random.default_rng(seed)
    groups = rng.permutation(num_experts).reshape(num_domains, -1)
    slots = rng.gamma(0.3, size=(num_docs, num_experts))
    domain = rng.integers(num_domains, size=num_docs)
    for d in range(num_docs):
        slots[d, groups[domain[d]]] += rng.gamma(3.0, size=groups.shape[1])
    return slots


@pytest.mark.parametrize("seed", range(4))
def test_search_matches_brute_force_on_two_ranks(seed):
    slots = domain_usage(30, 10, 2, seed) + np.random.default_rng(seed).gamma(0.5, size=(30, 10))
    rank_of = place_layer(slots, [5, 5], restarts=8, seed=seed)
    assert np.bincount(rank_of).tolist() == [5, 5]
    assert kept_share(slots, rank_of, 2) == pytest.approx(brute_force_best(slots, [5, 5]), abs=1e-9)


def test_placement_recovers_domain_groups_and_beats_random():
    slots = domain_usage(200, 32, 4, seed=1)
    (layer,) = place_experts([slots], 4)
    assert sorted(layer.order) == list(range(32))
    assert layer.kept_after > layer.kept_random + 0.2
    assert layer.kept_after >= layer.kept_before
    # new slot s holds old expert order[s]: the permuted usage under Megatron's contiguous layout scores the same
    assert kept_share(slots[:, layer.order], contiguous_ranks([8] * 4), 4) == pytest.approx(layer.kept_after)


def test_inert_padding_leaves_the_last_rank_short():
    assert rank_capacities(127, 4) == [32, 32, 32, 31]
    assert rank_capacities(8, 4) == [2, 2, 2, 2]
    (layer,) = place_experts([domain_usage(50, 30, 3, seed=2)[:, :27]], 4)  # 27 experts: 7, 7, 7, 6
    assert sorted(layer.order) == list(range(27))


def test_slot_order_groups_each_rank_in_old_order():
    assert slot_order(np.array([1, 0, 1, 0])) == [1, 3, 0, 2]
