"""CP2 at the EmoMoELayer level: zig-zag sequence chunks route exactly like the full sequence on one rank.

Megatron's attention needs Transformer Engine for context parallelism, so the GPTModel cannot run CP on CPU;
the MoE layer is where EMO meets CP (per-document statistics summed over the TP×CP group). Each sequence is
split with Megatron's own ``get_batch_on_this_cp_rank`` (chunks r and 2·cp−1−r on rank r), so documents
that span chunks live on both ranks and must still get one pool.
"""

import torch

from tests.parallel.harness import (
    SINGLE,
    Layout,
    RouterCapture,
    assert_close_dicts,
    build_emo_moe_layer,
    clear_metrics,
    emo_config,
    expected_grads,
    gradients,
    load_balancing_loss,
    load_from_single_rank,
    moe_layer_inputs,
    parameters,
    reduce_gradients_like_megatron,
    run_ranks,
)

SEQ, BATCH, HIDDEN = 32, 2, 32
CONFIG = {"emo": {"pool_max": 4}}  # small pools, so a split document that got two pools would route differently


def cp_layer_step(layout, full_state=None, full_grads=None, config=CONFIG):
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_utils import MoEAuxLossAutoScaler
    from megatron.core.utils import get_batch_on_this_cp_rank

    torch.manual_seed(7)
    layer = build_emo_moe_layer(emo_config(layout, **config))
    if full_state is not None:
        load_from_single_rank(layer, full_state)
    clear_metrics()
    capture = RouterCapture(layer)
    hidden, ids, weight = moe_layer_inputs(SEQ, BATCH, HIDDEN, seed=3)
    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    batch = {"hidden": hidden.transpose(0, 1), "ids": ids, "weight": weight.transpose(0, 1), "position": positions}
    batch = get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=ps.get_context_parallel_group())
    hidden = batch["hidden"].transpose(0, 1).contiguous().requires_grad_()
    # Megatron's CP convention: each rank's loss share and the aux-loss scale are multiplied by cp
    # (schedules.forward_step_calc_loss), gradients are averaged over data × context.
    cp = layout.cp
    MoEAuxLossAutoScaler.set_loss_scale(torch.tensor(float(cp)))
    output, _ = layer(hidden, padding_mask=batch["ids"])
    (output * batch["weight"].transpose(0, 1)).sum().mul(cp).backward()
    reduce_gradients_like_megatron(layer)
    result = dict(
        maps=capture.maps[1][0], seq_index=batch["position"][0], ids=batch["ids"], lb_loss=load_balancing_loss(),
        grads=gradients(layer), input_grad=hidden.grad / cp,
    )
    if full_state is None:
        result["state"] = parameters(layer)
    else:
        result["expected_grads"] = expected_grads(layer, full_grads)
    return result


def test_cp2_zigzag_chunks_route_and_train_like_full_sequences():
    (ref,) = run_ranks(cp_layer_step, 1, SINGLE)
    results = run_ranks(cp_layer_step, 2, Layout(cp=2), full_state=ref["state"], full_grads=ref["grads"])

    documents = [set(r["ids"][r["ids"] > 0].tolist()) for r in results]
    assert documents[0] & documents[1], "test data must have documents spanning both CP ranks"
    for rank, r in enumerate(results):
        assert torch.equal(r["maps"], ref["maps"][r["seq_index"]]), f"rank {rank}: routing differs"
        torch.testing.assert_close(r["lb_loss"], ref["lb_loss"])
        torch.testing.assert_close(r["input_grad"], ref["input_grad"][r["seq_index"]], rtol=1e-5, atol=1e-6)
        assert_close_dicts(r["grads"], r["expected_grads"], rtol=1e-5, atol=1e-6, what=f"rank {rank} grad")
