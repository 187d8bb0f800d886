"""PP2: two GPTModel stages (one layer each) with activations and their gradients passed by gloo send/recv.

Megatron's pipeline schedules allocate on CUDA (their ``total_num_tokens`` counter), so the two stages are driven
by hand. Both stages receive the routing ids; the second stage's layer keeps its global layer number, so it
draws the same pools and routes exactly like layer 2 of the 1-rank model.
"""

import torch

from tests.parallel.harness import (
    MODEL_SEED,
    Layout,
    RouterCapture,
    assert_step_matches_reference,
    build_gpt,
    clear_metrics,
    documents_batch,
    emo_config,
    expected_grads,
    gpt_train_step,
    gradients,
    load_balancing_loss,
    load_from_single_rank,
    reduce_gradients_like_megatron,
    run_ranks,
)


def pipeline_step(layout, tokens, ids, loss_mask, full_state, full_grads, config=None):
    from megatron.core import parallel_state as ps

    torch.manual_seed(MODEL_SEED)
    stage = build_gpt(emo_config(layout, **(config or {})), seq_len=tokens.shape[1])
    load_from_single_rank(stage, full_state)
    clear_metrics()
    capture = RouterCapture(stage)
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
    activation_shape = (tokens.shape[1], tokens.shape[0], stage.config.hidden_size)  # [s, b, h]

    if not first:  # receive the previous stage's activations
        received = torch.empty(activation_shape)
        torch.distributed.recv(received, src=ps.get_pipeline_model_parallel_prev_rank())
        received.requires_grad_()
        stage.set_input_tensor(received)
    output = stage(tokens, positions, None, labels=tokens if last else None, padding_mask=ids)
    per_token_loss = None
    if last:
        per_token_loss = output.detach()
        ((output * loss_mask).sum() / loss_mask.sum()).backward()
    else:
        torch.distributed.send(output.detach().contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        output_grad = torch.empty(activation_shape)
        torch.distributed.recv(output_grad, src=ps.get_pipeline_model_parallel_next_rank())
        output.backward(output_grad)
    if not first:  # send the activation gradient back
        torch.distributed.send(received.grad.contiguous(), dst=ps.get_pipeline_model_parallel_prev_rank())
    reduce_gradients_like_megatron(stage)
    return dict(
        per_token_loss=per_token_loss,
        batch_index=torch.arange(tokens.shape[0]),
        seq_index=torch.arange(tokens.shape[1]),
        maps=capture.maps,
        lb_loss=load_balancing_loss(),
        grads=gradients(stage),
        expected_grads=expected_grads(stage, full_grads),
    )


def test_pp2_stages_route_and_train_like_single_rank():
    tokens, ids, loss_mask = documents_batch(2, 16, seed=4, padding={1: 3})
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask)
    (ref,) = run_ranks(gpt_train_step, 1, **data)
    results = run_ranks(pipeline_step, 2, Layout(pp=2), full_state=ref["state"], full_grads=ref["grads"], **data)
    assert [sorted(r["maps"]) for r in results] == [[1], [2]]  # one EMO layer per stage, global numbering
    assert_step_matches_reference(results, ref)


def test_pp2_second_stage_uses_the_pool_range_of_global_layer_two():
    """Layer 1 unrestricted, layer 2 pooled in [2, 3]: a stage that counted its layer from 1 would route layer 2
    over all experts and differ from the single-rank model."""
    tokens, ids, loss_mask = documents_batch(2, 16, seed=5)
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask,
                config=dict(emo=dict(pool_min_per_layer=(8, 2), pool_max_per_layer=(8, 3))))
    (ref,) = run_ranks(gpt_train_step, 1, **data)
    (unrestricted,) = run_ranks(gpt_train_step, 1, **{**data, "config": dict(emo=dict(pool_min=8, pool_max=8))})
    assert torch.equal(ref["maps"][1][0], unrestricted["maps"][1][0])
    assert not torch.equal(ref["maps"][2][0], unrestricted["maps"][2][0])
    results = run_ranks(pipeline_step, 2, Layout(pp=2), full_state=ref["state"], full_grads=ref["grads"], **data)
    assert_step_matches_reference(results, ref)
