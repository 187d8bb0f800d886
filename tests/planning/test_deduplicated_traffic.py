"""The planner's deduplicated EP line: expected destination ranks per token against a sampled reference."""

import dataclasses

import pytest
import torch

from emo_plugin.planning.communication import deduplicated_copies
from tests.convert.checkpoint_workers import TINY  # 8 routed experts, top-2


def sampled_offrank_ranks(num_experts: int, topk: int, ep: int, reach_groups: int | None, samples: int = 20000):
    """Balanced routing by sampling: each token picks top-k uniformly among the experts of the ranks it may reach."""
    g = torch.Generator().manual_seed(0)
    per_rank = num_experts // ep
    own = torch.randint(ep, (samples,), generator=g)
    reach = ep if reach_groups is None else reach_groups
    ranks = torch.stack([torch.randperm(ep, generator=g)[:reach] for _ in range(samples)])
    local = torch.stack([torch.randperm(reach * per_rank, generator=g)[:topk] for _ in range(samples)])
    chosen_ranks = ranks.gather(1, local // per_rank)
    distinct = [set(row.tolist()) - {o} for row, o in zip(chosen_ranks, own.tolist())]
    return sum(map(len, distinct)) / samples


@pytest.mark.parametrize("ep,limit", [(2, None), (4, None), (4, (1, 4)), (4, (2, 4)), (8, (1, 4))])
def test_expected_destinations_match_sampling(ep, limit):
    record = dataclasses.replace(TINY, num_moe_experts=16, moe_router_topk=3)
    reach = None
    if limit is not None:
        record = dataclasses.replace(record, pool_max_ranks=limit[0], pool_rank_groups=limit[1])
        reach = min(ep, limit[0] * max(1, ep // limit[1]))
    expected = sampled_offrank_ranks(16, 3, ep, reach)
    assert deduplicated_copies(record, ep) == pytest.approx(expected, rel=0.03)


def test_rank_limit_lowers_the_deduplicated_line_only():
    record = dataclasses.replace(TINY, num_moe_experts=16, moe_router_topk=3)
    limited = dataclasses.replace(record, pool_max_ranks=1, pool_rank_groups=4)
    assert deduplicated_copies(limited, 4) == pytest.approx(0.75)
    assert deduplicated_copies(limited, 4) < deduplicated_copies(record, 4) < 3 * 0.75
    assert deduplicated_copies(record, 1) == 0.0
