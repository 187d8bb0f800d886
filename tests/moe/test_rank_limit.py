"""Rank-limited pools and the dispatch-traffic counter against plain loop re-computations."""

import pytest
import torch

from emo_plugin.errors import ConfigError
from emo_plugin.moe.routing import RankLimit, document_slots, pool_masked_logits
from emo_plugin.moe.traffic import dispatch_traffic
from tests.helpers import tiny_config


def reference_pool(scores_R: list[float], num_experts: int, limit: RankLimit, size: int) -> set[int]:
    """One slot, by hand: the best groups by summed score, then the best experts inside them."""
    group = num_experts // limit.groups
    sums = [sum(scores_R[e] for e in range(g * group, min((g + 1) * group, len(scores_R))))
            for g in range(limit.groups)]
    groups = sorted(range(limit.groups), key=lambda g: (-sums[g], g))[: limit.max_groups]
    allowed = [e for e in range(len(scores_R)) if e // group in groups]
    return set(sorted(allowed, key=lambda e: (-scores_R[e], e))[:size])


@pytest.mark.parametrize("limit,selectable", [(RankLimit(4, 1), 16), (RankLimit(4, 2), 16), (RankLimit(2, 1), 14)])
def test_pools_come_from_the_best_groups(limit, selectable):
    num_experts, batch, max_docs = 16, 2, 3
    g = torch.Generator().manual_seed(3)
    logits_TE = torch.randn(40 * batch, num_experts, generator=g, dtype=torch.float64) * 2
    segments_T = torch.randint(1, max_docs + 1, (logits_TE.shape[0],), generator=g)
    slots_T = document_slots(segments_T, batch, max_docs)
    num_slots = batch * (max_docs + 1)
    pool_size_N = torch.randint(2, 20, (num_slots,), generator=g)
    _, pool_NE, stats_NS = pool_masked_logits(
        logits_TE, slots_T, pool_size_N, num_selectable=selectable, rank_limit=limit
    )
    probs_TR = torch.softmax(logits_TE[:, :selectable], dim=-1)
    for n in range(num_slots):
        scores = probs_TR[slots_T == n].sum(0).tolist()
        if not scores or slots_T.eq(n).sum() == 0:
            continue
        expected = reference_pool(scores, num_experts, limit, int(pool_size_N[n]))
        assert set(pool_NE[n].nonzero().flatten().tolist()) == expected, n
    assert not pool_NE[:, selectable:].any()


def test_traffic_counts_offrank_slots_and_destination_ranks():
    g = torch.Generator().manual_seed(0)
    experts_TK = torch.stack([torch.randperm(8, generator=g)[:3] for _ in range(50)])
    routing_map_TE = torch.zeros(50, 8, dtype=torch.bool).scatter_(1, experts_TK, True)
    ep_size, ep_rank, per_token = 4, 1, 64 * 2
    traffic = dispatch_traffic(routing_map_TE, ep_rank=ep_rank, ep_size=ep_size, bytes_per_token=per_token)
    slots = pairs = 0
    for row in experts_TK.tolist():
        ranks = [e // 2 for e in row]
        slots += sum(r != ep_rank for r in ranks)
        pairs += len({r for r in ranks if r != ep_rank})
    assert traffic["ep_offrank_share"].item() == pytest.approx(slots / (50 * 3))
    assert traffic["ep_dispatch_bytes"].item() == slots * per_token
    assert traffic["ep_dispatch_bytes_dedup"].item() == pairs * per_token


@pytest.mark.parametrize("emo,config,message", [
    (dict(pool_max_ranks=1), {}, "pool_rank_groups"),
    (dict(pool_rank_groups=2), {}, "pool_max_ranks"),
    (dict(pool_max_ranks=2, pool_rank_groups=2), {}, "restricts nothing"),
    (dict(pool_max_ranks=1, pool_rank_groups=3), {}, "does not divide num_moe_experts=8"),
    (dict(pool_max_ranks=1, pool_rank_groups=4, pool_min=3), {}, "holds 2 selectable experts"),
    (dict(pool_max_ranks=1, pool_rank_groups=2, pool_min=2, num_inert_experts=2), {"moe_router_topk": 2},
     None),
    (dict(pool_max_ranks=1, pool_rank_groups=2, pool_min=3, num_inert_experts=2), {}, "holds 2 selectable"),
    (dict(pool_max_ranks=1, pool_rank_groups=4, pool_min=2, pool_min_per_layer=(2, 3)), {}, "pool_min_per_layer"),
])
def test_validation_refuses_limits_that_cannot_hold_the_pool(emo, config, message):
    if message is None:
        assert tiny_config(emo=emo, **config).rank_group_capacities() == [4, 2]
        return
    with pytest.raises(ConfigError, match=message):
        tiny_config(emo=emo, **config)


def test_validation_refuses_groups_that_straddle_ranks():
    with pytest.raises(ConfigError, match="straddles ranks"):
        tiny_config(emo=dict(pool_max_ranks=1, pool_rank_groups=4, num_inert_experts=4),
                    num_moe_experts=12, expert_model_parallel_size=3)
