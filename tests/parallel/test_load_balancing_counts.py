"""The load-balancing expert counts are global: summed over data × context × TP (sequence) shards, and with
``lb_scope="global_batch"`` accumulated over micro-batches until ``reset_global_aux_loss_tracker()``.

Expected counts come from a 1-rank layer with the same weights that routes each data-parallel rank's full
sequences in turn (no sharding, no all-reduce): a rank that routed the wrong tokens, or counted another
rank's, would disagree with it even if its own routing map and counts were consistent with each other.
"""

import pytest
import torch

from tests.parallel.harness import (
    SINGLE,
    Layout,
    RouterCapture,
    build_emo_moe_layer,
    emo_config,
    load_from_single_rank,
    moe_layer_inputs,
    parameters,
    run_ranks,
)

SEQ, BATCH, HIDDEN = 16, 2, 32
DATA_RANKS, MICRO_BATCHES = 2, 3
CONFIG = {"emo": {"lb_scope": "global_batch"}}


def micro_batch(dp_rank: int, mb: int):
    return moe_layer_inputs(SEQ, BATCH, HIDDEN, seed=10 * dp_rank + mb)


def single_rank_counts(layout):
    """Per micro-batch: routed slots per expert on non-padding tokens of both data ranks, and their token count."""
    torch.manual_seed(3)
    layer = build_emo_moe_layer(emo_config(layout, **CONFIG))
    capture = RouterCapture(layer)
    counts = []
    for mb in range(MICRO_BATCHES):
        total = torch.zeros(layer.config.num_moe_experts + 1)
        for dp_rank in range(DATA_RANKS):
            hidden, ids, _ = micro_batch(dp_rank, mb)
            with torch.no_grad():
                layer(hidden, padding_mask=ids)
            routing_map, valid = capture.maps[1][-1], (ids.T > 0).unsqueeze(-1)
            total += torch.cat([(routing_map & valid).sum(dim=(0, 1)).float(), valid.sum().float().view(1)])
        counts.append(total)
    return dict(state=parameters(layer), counts=counts)


def accumulate_three_micro_batches(layout, full_state):
    from megatron.core import parallel_state as ps
    from megatron.core.utils import get_batch_on_this_cp_rank

    layer = build_emo_moe_layer(emo_config(layout, **CONFIG))
    load_from_single_rank(layer, full_state)
    accumulated = []
    for mb in range(MICRO_BATCHES):
        if mb == 2:
            layer.router.reset_global_aux_loss_tracker()  # what finalize_model_grads calls once per step
        hidden, ids, _ = micro_batch(ps.get_data_parallel_rank(), mb)
        if layout.cp > 1:  # zig-zag chunks of hidden states and ids
            batch = {"hidden": hidden.transpose(0, 1), "ids": ids}
            batch = get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=ps.get_context_parallel_group())
            hidden, ids = batch["hidden"].transpose(0, 1).contiguous(), batch["ids"]
        if layout.tp > 1:  # sequence parallel: this rank's hidden chunk; the layer slices the full-length ids
            hidden = hidden.chunk(layout.tp)[ps.get_tensor_model_parallel_rank()]
        (layer(hidden.requires_grad_(), padding_mask=ids)[0]).sum().backward()
        accumulated.append(layer.router.lb_accumulated_counts.clone())
    return dict(accumulated=accumulated, lb_type=layer.config.moe_router_load_balancing_type)


@pytest.fixture(scope="module")
def reference():
    (result,) = run_ranks(single_rank_counts, 1, SINGLE)
    return result


@pytest.mark.parametrize("layout", [Layout(tp=2), Layout(cp=2)], ids=["tp2_sp_x_dp2", "cp2_x_dp2"])
def test_global_batch_counts_sum_all_shards_accumulate_and_reset(layout, reference):
    results = run_ranks(accumulate_three_micro_batches, 4, layout, full_state=reference["state"])
    counts = reference["counts"]
    assert counts[0][-1] == DATA_RANKS * BATCH * SEQ  # no padding in these inputs: every token counts
    for r in results:
        accumulated = r["accumulated"]
        assert r["lb_type"] == "global_aux_loss"  # makes finalize_model_grads call the reset hook
        torch.testing.assert_close(accumulated[0], counts[0], rtol=0, atol=0)
        torch.testing.assert_close(accumulated[1], counts[0] + counts[1], rtol=0, atol=0)
        torch.testing.assert_close(accumulated[2], counts[2], rtol=0, atol=0)  # reset before micro-batch 2
