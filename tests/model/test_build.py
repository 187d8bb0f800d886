"""A Megatron GPTModel with EMO MoE layers on the host (``emo_plugin/model/build.py``): forward/backward, routing
ids per layer, evaluation pools."""

import pytest
import torch

from emo_plugin.model.build import build_emo_gpt_model
from emo_plugin.moe.routing_ids import build_routing_ids
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
VOCAB, SEQ, BATCH = 64, 20, 2


def test_gpt_model_forward_backward_and_routing_ids_reach_every_router():
    torch.manual_seed(0)
    config = tiny_config(num_layers=3)
    model = build_emo_gpt_model(
        config, vocab_size=VOCAB, max_sequence_length=SEQ, use_transformer_engine=False, host_execution=True
    )
    seen = []
    for layer in model.decoder.layers:
        layer.mlp.router.register_forward_pre_hook(lambda m, args: seen.append(m.routing_ids_SB.clone()))
    tokens = torch.randint(1, VOCAB, (BATCH, SEQ))
    tokens[:, 7] = 0
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16)
    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    loss = model(tokens, positions, None, labels=tokens, padding_mask=ids)
    assert loss.shape == (BATCH, SEQ) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert len(seen) == 3 and all(torch.equal(s, ids.T) for s in seen)
    for layer in model.decoder.layers:
        assert layer.mlp.router.weight.grad.abs().sum() > 0
        assert layer.mlp.router.routing_ids_SB is None  # ids never outlive their forward
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_eval_mode_routes_with_the_fixed_eval_pool_and_is_deterministic():
    torch.manual_seed(1)
    model = build_emo_gpt_model(
        tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ, use_transformer_engine=False, host_execution=True
    ).eval()
    tokens = torch.randint(1, VOCAB, (BATCH, SEQ))
    positions = torch.arange(SEQ).expand(BATCH, SEQ)

    def make_ids(seed):
        return build_routing_ids(
            tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16,
            generator=torch.Generator().manual_seed(seed),
        )

    with torch.no_grad():
        first = model(tokens, positions, None, padding_mask=make_ids(0))
        second = model(tokens, positions, None, padding_mask=make_ids(1))  # salts only matter in training
        without_ids = model(tokens, positions, None)  # no EOD in these tokens: one document per sequence
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(without_ids, first, rtol=0, atol=0)
