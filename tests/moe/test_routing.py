"""The pure EMO routing math (``emo_plugin/moe/routing.py``) against a per-document plain-PyTorch loop
(``tests/moe/reference_routing.py``)."""

import pytest
import torch

from emo_plugin.moe.routing import (
    RankLimit,
    document_slots,
    draw_pool_sizes,
    pool_masked_logits,
    with_unrestricted_padding,
)
from tests.moe.reference_routing import emo_route, random_segments, reference_route

CASES = [
    # seq, batch, expert slots, inert, topk, max_docs, pool range, pad
    (16, 2, 8, 0, 2, 4, (2, 8), False),
    (32, 3, 16, 0, 4, 8, (4, 12), True),
    (7, 1, 8, 0, 3, 7, (3, 5), False),  # one-token documents possible
    (24, 4, 12, 2, 2, 1, (2, 10), True),  # one document per sequence, inert experts
    (40, 2, 32, 0, 8, 40, (8, 32), True),  # many documents
]


@pytest.mark.parametrize("seq,batch,experts,inert,topk,max_docs,pool_range,pad", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_emo_route_matches_per_document_reference(seq, batch, experts, inert, topk, max_docs, pool_range, pad, seed):
    g = torch.Generator().manual_seed(seed)
    selectable = experts - inert
    logits_SBE = torch.randn(seq, batch, experts, generator=g)
    segments_SB = random_segments(seq, batch, max_docs, g, pad)
    sizes_BN = torch.randint(pool_range[0], pool_range[1] + 1, (batch, max_docs + 1), generator=g)

    slots_T = document_slots(segments_SB.reshape(-1), batch, max_docs)
    sizes_N = with_unrestricted_padding(sizes_BN.reshape(-1), max_docs, selectable)
    routed = emo_route(logits_SBE.reshape(-1, experts), slots_T, sizes_N, topk=topk, num_selectable=selectable)
    ref_probs, ref_map, ref_pools = reference_route(
        logits_SBE, segments_SB, lambda b, d: int(sizes_BN[b, d]), topk, selectable
    )

    assert torch.equal(routed.routing_map_TE, ref_map)
    torch.testing.assert_close(routed.probs_TE, ref_probs, rtol=1e-6, atol=1e-7)
    for (b, doc), pool in ref_pools.items():
        assert set(routed.pool_NE[b * (max_docs + 1) + doc].nonzero().flatten().tolist()) == pool


@pytest.mark.parametrize("seed", range(4))
def test_every_token_gets_exactly_k_experts_inside_its_pool(seed):
    g = torch.Generator().manual_seed(seed)
    seq, batch, experts, topk, max_docs = 64, 3, 16, 4, 10
    logits = torch.randn(seq * batch, experts, generator=g) * 5
    segments = random_segments(seq, batch, max_docs, g, pad_tail=True).reshape(-1)
    slots = document_slots(segments, batch, max_docs)
    sizes = torch.randint(topk, experts + 1, (batch * (max_docs + 1),), generator=g)
    routed = emo_route(logits, slots, sizes, topk=topk)
    assert (routed.routing_map_TE.sum(-1) == topk).all()
    assert not (routed.routing_map_TE & ~routed.pool_NE[slots]).any()
    assert ((routed.probs_TE > 0) == routed.routing_map_TE).all()


def test_pool_choice_carries_no_gradient_but_gates_do():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(12, 8, generator=g, requires_grad=True)
    slots = document_slots(torch.tensor([1] * 6 + [2] * 6), 1, 4)
    routed = emo_route(logits, slots, torch.full((5,), 3), topk=2)
    routed.probs_TE.sum().backward()
    outside = ~routed.pool_NE[slots]
    assert logits.grad[outside].abs().max() == 0
    assert logits.grad[~outside].abs().max() > 0


def test_pool_sizes_are_uniform_reproducible_and_layer_specific():
    salts = torch.randint(1, 2**31, (20_000,), generator=torch.Generator().manual_seed(0))
    sizes = draw_pool_sizes(salts, layer_number=3, seed=7, pool_min=8, pool_max=15)
    assert sizes.min() == 8 and sizes.max() == 15
    counts = torch.bincount(sizes - 8, minlength=8).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert torch.equal(sizes, draw_pool_sizes(salts, layer_number=3, seed=7, pool_min=8, pool_max=15))
    other_layer = draw_pool_sizes(salts, layer_number=4, seed=7, pool_min=8, pool_max=15)
    assert (other_layer != sizes).float().mean() > 0.8


def test_near_tied_pool_does_not_depend_on_token_order():
    """One document of 4,096 tokens, pool size 1, experts 0 and 1 tied up to one token's logit nudged by 3e-6.

    Tokens come in pairs whose logits for experts 0 and 1 are swapped, so in exact arithmetic both experts have
    the same summed probability; the nudge (on expert 1) then makes expert 1 the pool by ~7e-7 on a sum of
    ~1,000. float32 sums (ulp 6e-5 at 1,000) lose that gap and the winner depends on the summation order;
    float64 sums (error ~1e-10) keep it. The expectation is the exact argument above, cross-checked with
    ``math.fsum`` (correctly rounded) of the float64 probabilities.
    """
    import math

    g = torch.Generator().manual_seed(0)
    half, experts = 2048, 8
    first = torch.randn(half, experts, generator=g)
    first[:, :2] += 3.0  # experts 0 and 1 dominate every token's softmax
    second = first.clone()
    second[:, [0, 1]] = first[:, [1, 0]]
    logits = torch.cat([first, second])
    logits[0, 1] += 3e-6
    probs = torch.softmax(logits.double(), dim=-1)
    assert math.fsum(probs[:, 1].tolist()) > math.fsum(probs[:, 0].tolist())

    slots = torch.ones(2 * half, dtype=torch.long)  # one sequence, document 1
    sizes = torch.tensor([experts, 1])
    for seed in range(12):
        order = torch.randperm(2 * half, generator=torch.Generator().manual_seed(seed))
        routed = emo_route(logits[order], slots, sizes, topk=1)
        assert routed.pool_NE[1].nonzero().flatten().tolist() == [1], f"token order {seed} changed the pool"


def test_tied_document_scores_keep_the_lower_expert_indices():
    """Equal logits give every expert exactly the same summed probability: the pool is the P lowest indices.
    64 experts: small rows may be sorted stably even by an unstable sort."""
    logits = torch.zeros(6, 64)
    logits[3:, 5] = 1.0  # second document: expert 5 first, then the tied rest by index
    slots = document_slots(torch.tensor([1, 1, 1, 2, 2, 2]), 1, 2)
    routed = emo_route(logits, slots, torch.tensor([64, 3, 3]), topk=2)
    assert routed.pool_NE[1].nonzero().flatten().tolist() == [0, 1, 2]
    assert routed.pool_NE[2].nonzero().flatten().tolist() == [0, 1, 5]


def test_document_statistics_and_masked_logits_are_the_per_document_sums():
    """Token counts, summed softmax probabilities (float64 loop) and −inf outside the pool, per slot."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(10, 6, generator=g)
    segments = torch.tensor([1, 1, 1, 2, 2, 0, 1, 1, 0, 0])  # two sequences (t = s·2 + b)
    slots = document_slots(segments, 2, 3)
    routed = emo_route(logits, slots, torch.full((8,), 2), topk=1)
    for slot in range(8):
        rows = (slots == slot).nonzero().flatten().tolist()
        assert routed.doc_mass_N[slot] == len(rows)
        expected = sum((torch.softmax(logits[r].double(), -1) for r in rows), torch.zeros(6, dtype=torch.float64))
        torch.testing.assert_close(routed.doc_scores_NR[slot], expected.float(), rtol=1e-6, atol=1e-7)
        for r in rows:
            pool = routed.pool_NE[slot]
            assert torch.equal(routed.masked_logits_TE[r][pool], logits[r][pool])
            assert (routed.masked_logits_TE[r][~pool] == float("-inf")).all()


def test_shards_that_sum_their_statistics_route_like_the_whole_sequence():
    """Two halves of a batch (as under sequence parallelism) each add the other's per-slot statistics through
    ``reduce_doc_stats`` and must then choose the pools, and route their tokens, exactly as the full batch."""
    g = torch.Generator().manual_seed(6)
    seq, batch, max_docs = 12, 2, 3
    logits_SBE = torch.randn(seq, batch, 8, generator=g)
    segments_SB = random_segments(seq, batch, max_docs, g, pad_tail=True)
    sizes = with_unrestricted_padding(torch.randint(2, 6, (batch * (max_docs + 1),), generator=g), max_docs, 8)
    full = emo_route(logits_SBE.reshape(-1, 8), document_slots(segments_SB.reshape(-1), batch, max_docs), sizes, topk=2)
    halves = [slice(0, seq // 2), slice(seq // 2, seq)]
    own_stats = []
    for half in halves:
        local = emo_route(
            logits_SBE[half].reshape(-1, 8), document_slots(segments_SB[half].reshape(-1), batch, max_docs), sizes,
            topk=2,
        )
        own_stats.append(torch.cat([local.doc_scores_NR, local.doc_mass_N.unsqueeze(-1)], -1).double())
    for i, half in enumerate(halves):
        other = own_stats[1 - i]
        shard = emo_route(
            logits_SBE[half].reshape(-1, 8), document_slots(segments_SB[half].reshape(-1), batch, max_docs), sizes,
            topk=2, reduce_doc_stats=lambda stats: stats + other,
        )
        assert torch.equal(shard.pool_NE, full.pool_NE)
        assert torch.equal(shard.routing_map_TE, full.routing_map_TE.view(seq, batch, 8)[half].reshape(-1, 8))


def reference_pool(scores_R: list[float], num_expert_slots: int, limit: RankLimit, size: int) -> set[int]:
    """One document slot, by hand: the best groups by summed score, then the best routed experts inside them."""
    group = num_expert_slots // limit.groups
    sums = [sum(scores_R[e] for e in range(g * group, min((g + 1) * group, len(scores_R))))
            for g in range(limit.groups)]
    groups = sorted(range(limit.groups), key=lambda g: (-sums[g], g))[: limit.max_groups]
    allowed = [e for e in range(len(scores_R)) if e // group in groups]
    return set(sorted(allowed, key=lambda e: (-scores_R[e], e))[:size])


@pytest.mark.parametrize("limit,selectable", [(RankLimit(4, 1), 16), (RankLimit(4, 2), 16), (RankLimit(2, 1), 14)])
def test_rank_limited_pools_come_from_the_best_groups(limit, selectable):
    num_expert_slots, batch, max_docs = 16, 2, 3
    g = torch.Generator().manual_seed(3)
    logits_TE = torch.randn(40 * batch, num_expert_slots, generator=g, dtype=torch.float64) * 2
    segments_T = torch.randint(1, max_docs + 1, (logits_TE.shape[0],), generator=g)
    slots_T = document_slots(segments_T, batch, max_docs)
    num_doc_slots = batch * (max_docs + 1)
    pool_size_N = torch.randint(2, 20, (num_doc_slots,), generator=g)
    _, pool_NE, _ = pool_masked_logits(
        logits_TE, slots_T, pool_size_N, num_selectable=selectable, rank_limit=limit
    )
    probs_TR = torch.softmax(logits_TE[:, :selectable], dim=-1)
    for n in range(num_doc_slots):
        scores = probs_TR[slots_T == n].sum(0).tolist()
        if not scores or slots_T.eq(n).sum() == 0:
            continue
        expected = reference_pool(scores, num_expert_slots, limit, int(pool_size_N[n]))
        assert set(pool_NE[n].nonzero().flatten().tolist()) == expected, n
    assert not pool_NE[:, selectable:].any()
