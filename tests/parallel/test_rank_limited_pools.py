"""Rank-limited pools under PP2 and (MoE layer) CP2 equal the 1-rank step (TP2+SP, EP2 and TP2×EP2: in
test_model_parallel.py); every document routes inside one group; the EP traffic counter counts what this rank's
tokens send."""

import pytest
import torch

from emo_plugin.moe.routing_ids import split_routing_ids
from tests.parallel.harness import (
    SINGLE,
    Layout,
    assert_step_matches_reference,
    documents_batch,
    gpt_train_step,
    run_ranks,
)
from tests.parallel.test_context_parallel import cp_layer_step
from tests.parallel.test_pipeline_parallel import pipeline_step

LIMIT = {"emo": dict(pool_max_ranks=1, pool_rank_groups=2, pool_min=2, pool_max=8)}  # 4 of the 8 experts


@pytest.fixture(scope="module")
def reference():
    tokens, ids, loss_mask = documents_batch(4, 16, seed=5)
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask, config=LIMIT)
    (result,) = run_ranks(gpt_train_step, 1, **data)
    return data, result


def test_every_document_routes_inside_one_group(reference):
    data, ref = reference
    segments_BS, _ = split_routing_ids(data["ids"])
    for layer_maps in ref["maps"].values():
        routed_SBE = layer_maps[0]
        for b in range(segments_BS.shape[0]):
            for doc in segments_BS[b].unique().tolist():
                if doc == 0:
                    continue
                experts = routed_SBE[:, b][segments_BS[b] == doc].any(0).nonzero().flatten()
                assert len({e // 4 for e in experts.tolist()}) == 1


def test_rank_limited_pipeline_stages_equal_single_rank(reference):
    data, ref = reference
    results = run_ranks(pipeline_step, 2, Layout(pp=2), full_state=ref["state"], full_grads=ref["grads"], **data)
    assert_step_matches_reference(results, ref)


def test_rank_limited_context_parallel_chunks_route_like_full_sequences():
    """Documents split over the CP ranks still pick one group: the group sums are reduced over TP × CP first."""
    config = {"emo": dict(pool_max=4, **{k: LIMIT["emo"][k] for k in ("pool_max_ranks", "pool_rank_groups")})}
    (ref,) = run_ranks(cp_layer_step, 1, SINGLE, config=config)
    results = run_ranks(cp_layer_step, 2, Layout(cp=2), full_state=ref["state"], full_grads=ref["grads"],
                        config=config)
    for r in results:
        assert torch.equal(r["maps"], ref["maps"][r["seq_index"]])
        torch.testing.assert_close(r["lb_loss"], ref["lb_loss"])


def step_with_traffic(layout, **kwargs):
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    from emo_plugin.moe.traffic import EP_METRIC_NAMES

    result = gpt_train_step(layout, **kwargs)
    metrics = get_moe_metrics_tracker().metrics
    result["traffic"] = {name: metrics[name].values.clone() for name in EP_METRIC_NAMES}
    result["ep_rank"] = ps.get_expert_model_parallel_rank()
    return result


def test_traffic_counter_at_ep2(reference):
    data, _ = reference
    results = run_ranks(step_with_traffic, 2, Layout(ep=2), **data)
    for r in results:
        for layer, (routed_SBE,) in r["maps"].items():
            destination = torch.arange(8) // 4
            slots = routed_SBE.reshape(-1, 8)
            offrank = (slots & (destination != r["ep_rank"])).sum().item()
            pairs = (slots[:, destination != r["ep_rank"]].any(-1)).sum().item()
            values = {name: v[layer - 1].item() for name, v in r["traffic"].items()}
            assert values["ep_offrank_share"] == pytest.approx(offrank / slots.sum().item())
            assert values["ep_dispatch_bytes"] == offrank * 32 * 4  # hidden 32, fp32
            assert values["ep_dispatch_bytes_dedup"] == pairs * 32 * 4
