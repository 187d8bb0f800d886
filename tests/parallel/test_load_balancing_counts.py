"""The load-balancing expert counts are global: summed over data × context × TP (sequence) shards, and with
``lb_scope="global_batch"`` accumulated over micro-batches until ``reset_global_aux_loss_tracker()``."""

import pytest
import torch

from tests.parallel.harness import Layout, RouterCapture, build_emo_moe_layer, emo_config, moe_layer_inputs, run_ranks

SEQ, BATCH, HIDDEN = 16, 2, 32


def local_counts(capture: RouterCapture, call: int) -> torch.Tensor:
    """This rank's routed slots per expert on non-padding tokens, plus its non-padding token count."""
    routing_map, ids = capture.maps[1][call], capture.ids[1][call]
    valid = (ids > 0).unsqueeze(-1)
    return torch.cat([(routing_map & valid).sum(dim=(0, 1)).float(), valid.sum().float().view(1)])


def accumulate_three_micro_batches(layout):
    from megatron.core import parallel_state as ps
    from megatron.core.utils import get_batch_on_this_cp_rank

    torch.manual_seed(3)
    layer = build_emo_moe_layer(emo_config(layout, emo={"lb_scope": "global_batch"}))
    capture = RouterCapture(layer)
    accumulated, world_sums = [], []
    for mb in range(3):
        if mb == 2:
            layer.router.reset_global_aux_loss_tracker()  # what finalize_model_grads calls once per step
        hidden, ids, _ = moe_layer_inputs(SEQ, BATCH, HIDDEN, seed=10 * ps.get_data_parallel_rank() + mb)
        if layout.cp > 1:  # zig-zag chunks of hidden states and ids
            batch = {"hidden": hidden.transpose(0, 1), "ids": ids}
            batch = get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=ps.get_context_parallel_group())
            hidden, ids = batch["hidden"].transpose(0, 1).contiguous(), batch["ids"]
        if layout.tp > 1:  # sequence parallel: this rank's hidden chunk; the layer slices the full-length ids
            hidden = hidden.chunk(layout.tp)[ps.get_tensor_model_parallel_rank()]
        (layer(hidden.requires_grad_(), padding_mask=ids)[0]).sum().backward()
        counts = local_counts(capture, mb)
        torch.distributed.all_reduce(counts)  # every rank holds distinct tokens: the world sum is the global count
        world_sums.append(counts)
        accumulated.append(layer.router.lb_accumulated_counts.clone())
    return dict(accumulated=accumulated, world_sums=world_sums, lb_type=layer.config.moe_router_load_balancing_type)


@pytest.mark.parametrize("layout", [Layout(tp=2), Layout(cp=2)], ids=["tp2_sp_x_dp2", "cp2_x_dp2"])
def test_global_batch_counts_sum_all_shards_accumulate_and_reset(layout):
    results = run_ranks(accumulate_three_micro_batches, 4, layout)
    for r in results:
        sums, accumulated = r["world_sums"], r["accumulated"]
        assert r["lb_type"] == "global_aux_loss"  # makes finalize_model_grads call the reset hook
        torch.testing.assert_close(accumulated[0], sums[0], rtol=0, atol=0)
        torch.testing.assert_close(accumulated[1], sums[0] + sums[1], rtol=0, atol=0)
        torch.testing.assert_close(accumulated[2], sums[2], rtol=0, atol=0)  # reset before micro-batch 2
        assert accumulated[0][-1] == 2 * BATCH * SEQ  # tokens of both data-parallel ranks' full sequences
