"""DP2: each rank holds half the batch (with different padding); averaged gradients equal the 1-rank step."""

import pytest

from tests.parallel.harness import Layout, assert_step_matches_reference, documents_batch, gpt_train_step, run_ranks

# Megatron's z-loss is a per-rank token mean (exact across ranks only for equal valid-token counts), so it is
# switched off here where the two ranks hold different amounts of padding; the EMO load-balancing loss is global.
NO_Z_LOSS = {"emo": {"z_loss_coeff": 0.0}}


@pytest.mark.parametrize("lm_weight", [1.0, 0.0], ids=["lm_and_load_balancing", "load_balancing_only"])
def test_dp2_gradients_equal_single_rank_on_concatenated_batch(lm_weight):
    tokens, ids, loss_mask = documents_batch(4, 16, seed=1, padding={1: 5, 3: 2})  # rank 0: 5 pads, rank 1: 2
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask, lm_weight=lm_weight, config=NO_Z_LOSS)
    (reference,) = run_ranks(gpt_train_step, 1, **data)
    results = run_ranks(
        gpt_train_step, 2, Layout(), full_state=reference["state"], full_grads=reference["grads"], **data
    )
    assert_step_matches_reference(results, reference)
    router_grad = reference["grads"]["decoder.layers.0.mlp.router.weight"]
    assert router_grad.abs().sum() > 0  # the load-balancing gradient is really exercised
