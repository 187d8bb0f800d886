"""Recompute: the re-run forward routes with its own micro-batch's ids; gradients equal no recompute.

Single rank; recompute on CPU needs the ``_get/_set_cuda_rng_state`` shims (``CheckpointFunction`` saves the
CUDA RNG state in ``tensor_parallel.random.CheckpointFunction.forward``), which the harness applies in its workers.
"""

import torch

from tests.parallel.harness import (
    RouterCapture,
    assert_close_dicts,
    build_emo_moe_layer,
    documents_batch,
    emo_config,
    gpt_train_step,
    gradients,
    moe_layer_inputs,
    run_ranks,
)

SELECTIVE_MOE_RECOMPUTE = {"recompute_granularity": "selective", "recompute_modules": ["moe"]}
FULL_RECOMPUTE = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}


def interleaved_micro_batches(layout, recompute: bool):
    """1F1B order: forward mb0, forward mb1, backward mb0, backward mb1 (different documents per mb)."""
    torch.manual_seed(11)
    layer = build_emo_moe_layer(emo_config(layout, **(SELECTIVE_MOE_RECOMPUTE if recompute else {})))
    capture = RouterCapture(layer)
    batches = [moe_layer_inputs(16, 2, 32, seed=mb, eod_probability=0.05 + 0.2 * mb) for mb in (0, 1)]
    inputs = [hidden.requires_grad_() for hidden, _, _ in batches]
    losses = [(layer(x, padding_mask=ids)[0] * w).sum() for x, (_, ids, w) in zip(inputs, batches)]
    grads_after = []
    for loss in losses:
        loss.backward()
        grads_after.append({**gradients(layer), "input": torch.cat([x.grad for x in inputs if x.grad is not None])})
    return dict(maps=capture.maps[1], ids=capture.ids[1], grads_after=grads_after)


def test_selective_moe_recompute_routes_each_micro_batch_with_its_own_ids():
    (plain,) = run_ranks(interleaved_micro_batches, 1, recompute=False)
    (recomputed,) = run_ranks(interleaved_micro_batches, 1, recompute=True)
    # Router calls with recompute: fwd mb0, fwd mb1, recompute mb0, recompute mb1.
    assert len(plain["maps"]) == 2 and len(recomputed["maps"]) == 4
    assert not torch.equal(plain["ids"][0], plain["ids"][1])
    for mb in (0, 1):
        assert torch.equal(recomputed["ids"][2 + mb], plain["ids"][mb]), "recompute used another micro-batch's ids"
        assert torch.equal(recomputed["maps"][2 + mb], plain["maps"][mb])
        assert_close_dicts(recomputed["grads_after"][mb], plain["grads_after"][mb], what=f"after backward mb{mb}")


def test_full_layer_recompute_gives_the_same_gpt_gradients():
    tokens, ids, loss_mask = documents_batch(2, 16, seed=5, padding={0: 4})
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask)
    (plain,) = run_ranks(gpt_train_step, 1, **data)
    (recomputed,) = run_ranks(gpt_train_step, 1, config=FULL_RECOMPUTE, full_state=plain["state"], **data)
    assert all(len(calls) == 2 for calls in recomputed["maps"].values())  # forward + recompute
    for layer, calls in plain["maps"].items():
        assert all(torch.equal(m, calls[0]) for m in recomputed["maps"][layer])
    torch.testing.assert_close(recomputed["lb_loss"], plain["lb_loss"])
    assert_close_dicts(recomputed["grads"], plain["grads"], what="full recompute")
