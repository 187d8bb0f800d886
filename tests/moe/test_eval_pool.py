"""``evaluation_pool``: the plain top-k validation loss is the loss of the same weights in a model built with
pools of all routed experts, and the pooled loss comes back unchanged after the switch."""

import pytest
import torch

from emo_plugin.model.build import build_emo_gpt_model
from emo_plugin.moe.eval_pool import evaluation_pool
from emo_plugin.moe.routing_ids import build_routing_ids
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
VOCAB, SEQ, BATCH = 64, 24, 2


def model_with(pool_eval: int):
    config = tiny_config(emo={"pool_eval": pool_eval})
    model = build_emo_gpt_model(config, vocab_size=VOCAB, max_sequence_length=SEQ, use_transformer_engine=False,
                                host_execution=True)
    return model.eval()


@torch.no_grad()
def loss(model, tokens) -> torch.Tensor:
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16)
    return model(tokens, torch.arange(SEQ).expand(BATCH, SEQ), None, labels=tokens, padding_mask=ids).mean()


def test_plain_top_k_is_a_model_with_pools_of_all_experts_and_the_pool_is_restored():
    torch.manual_seed(0)
    pooled_model = model_with(pool_eval=2)  # tiny_config: 8 routed experts, 2 per token
    unrestricted = model_with(pool_eval=8)
    unrestricted.load_state_dict(pooled_model.state_dict())
    tokens = torch.randint(1, VOCAB, (BATCH, SEQ))
    tokens[:, 9] = 0  # two documents per sequence

    pooled = loss(pooled_model, tokens)
    with evaluation_pool(pooled_model, None):
        plain = loss(pooled_model, tokens)
        assert {layer.mlp.router.config.emo.pool_eval for layer in pooled_model.decoder.layers} == {8}
    assert torch.equal(plain, loss(unrestricted, tokens))
    assert not torch.allclose(plain, pooled)  # the pools of 2 do change the routing
    assert torch.equal(loss(pooled_model, tokens), pooled)
    with evaluation_pool([pooled_model], 2):
        assert torch.equal(loss(pooled_model, tokens), pooled)
