"""EmoRouter (the Megatron adapter) against Megatron's TopKRouter and against the pure routing function."""

import dataclasses

import pytest
import torch
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection, router_gating_linear
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.transformer_config import TransformerConfig

from emo_plugin.router import EmoRouter
from emo_plugin.routing import document_slots, draw_pool_sizes, emo_route, with_unrestricted_padding
from emo_plugin.routing_ids import build_routing_ids, split_routing_ids
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
SEQ, BATCH, HIDDEN = 24, 3, 32


def make_router(config, cls=EmoRouter):
    router = cls(config=config, pg_collection=get_default_pg_collection())
    router.set_layer_number(1)
    return router


def test_unrestricted_pool_without_shared_experts_reproduces_topk_router():
    emo_cfg = tiny_config(emo=dict(pool_min=8, pool_max=8, pool_eval=8, num_shared_experts=0, lb_coeff=0.0, z_loss_coeff=0.0))
    stock_fields = {f.name: getattr(emo_cfg, f.name) for f in dataclasses.fields(TransformerConfig) if f.init}
    stock_cfg = TransformerConfig(**{**stock_fields, "moe_router_load_balancing_type": "none"})
    torch.manual_seed(0)
    emo, stock = make_router(emo_cfg), make_router(stock_cfg, TopKRouter)
    stock.load_state_dict(emo.state_dict())
    x = torch.randn(SEQ, BATCH, HIDDEN, requires_grad=True)
    ids = build_routing_ids(
        tokens_BS=torch.randint(0, 5, (BATCH, SEQ)), eod_token_id=0, max_documents_per_sequence=16
    )
    for mode in ("train", "eval"):
        emo.train(mode == "train"), stock.train(mode == "train")
        emo.routing_ids_SB = ids.T
        probs, routing_map = emo(x)
        # TopKRouter.gating moves its weight to CUDA; feed it the same gating computed on the host.
        stock_logits = router_gating_linear(x, stock.weight, None, torch.float32)
        stock_probs, stock_map = stock.routing(stock_logits)
        assert torch.equal(routing_map, stock_map)
        torch.testing.assert_close(probs, stock_probs, rtol=0, atol=0)
        weight = torch.randn_like(probs)
        (g_emo,) = torch.autograd.grad((probs * weight).sum(), emo.weight)
        (g_stock,) = torch.autograd.grad((stock_probs * weight).sum(), stock.weight)
        torch.testing.assert_close(g_emo, g_stock, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("training", [True, False])
def test_router_equals_pure_routing_function(training):
    config = tiny_config(emo=dict(pool_min=2, pool_max=6, pool_eval=3))
    torch.manual_seed(1)
    router = make_router(config).train(training)
    x = torch.randn(SEQ, BATCH, HIDDEN)
    tokens = torch.randint(0, 4, (BATCH, SEQ))
    padding = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    padding[1, -5:] = True
    ids_BS = build_routing_ids(
        tokens_BS=tokens, eod_token_id=0, padding_BS=padding, max_documents_per_sequence=16,
        generator=torch.Generator().manual_seed(5),
    )
    router.routing_ids_SB = ids_BS.T
    probs, routing_map = router(x)

    segments, salts = split_routing_ids(ids_BS.T.reshape(-1))
    slots = document_slots(segments, BATCH, 16)
    salt_N = torch.zeros(BATCH * 17, dtype=torch.long).scatter_(0, slots, salts)
    if training:
        sizes = draw_pool_sizes(salt_N, layer_number=1, seed=config.emo.seed, pool_min=2, pool_max=6)
    else:
        sizes = torch.full_like(salt_N, 3)
    logits = (x.view(-1, HIDDEN) @ router.weight.T).detach()
    expected = emo_route(logits, slots, with_unrestricted_padding(sizes, 16, 8), topk=2)
    assert torch.equal(routing_map, expected.routing_map_TE)
    torch.testing.assert_close(probs, expected.probs_TE)


def test_load_balancing_and_z_loss_match_their_formulas():
    config = tiny_config(emo=dict(pool_min=3, pool_max=3, lb_coeff=0.1, z_loss_coeff=0.001))
    torch.manual_seed(2)
    router = make_router(config).train()
    get_moe_metrics_tracker().clear()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    padding = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    padding[0, :4] = True
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, padding_BS=padding, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    probs, routing_map = router(x)
    metrics = {k: v.values[0] for k, v in get_moe_metrics_tracker().metrics.items()}

    valid = (ids_BS.T.reshape(-1) > 0)
    logits = (x.view(-1, HIDDEN) @ router.weight.T).detach()
    masked = logits.masked_fill(~pool_of(router, ids_BS, logits), float("-inf"))
    scores = torch.softmax(masked, -1)
    f = routing_map[valid].float().sum(0) / valid.sum()
    p = scores[valid].mean(0)
    expected_lb = (8 / 2) * (f * p).sum()
    expected_z = (torch.logsumexp(masked[valid], -1) ** 2).mean()
    torch.testing.assert_close(metrics["load_balancing_loss"], expected_lb)
    torch.testing.assert_close(metrics["z_loss"], expected_z)
    assert metrics["emo_pool_size"] == 3.0
    assert 0 < metrics["emo_fraction_experts_used"] <= 1


def pool_of(router, ids_BS, logits):
    """Recover the pool mask the router used: experts routed by ANY token of a document lie in its pool; the
    pool is the top-3 by summed softmax, recomputed here per document."""
    segments = ids_BS.T.reshape(-1) & ((1 << 20) - 1)
    batch_of = torch.arange(segments.numel()) % BATCH
    pool = torch.ones_like(logits, dtype=torch.bool)
    for b in range(BATCH):
        for doc in segments[batch_of == b].unique().tolist():
            if doc == 0:
                continue
            rows = (batch_of == b) & (segments == doc)
            top = torch.softmax(logits[rows], -1).sum(0).topk(3).indices
            doc_pool = torch.zeros(8, dtype=torch.bool)
            doc_pool[top] = True
            pool[rows] = doc_pool
    return pool


def test_router_refuses_to_train_without_routing_ids():
    router = make_router(tiny_config()).train()
    with pytest.raises(RuntimeError, match="no routing ids"):
        router(torch.randn(4, 1, HIDDEN))
