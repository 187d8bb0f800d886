"""EmoRouter (the Megatron adapter) against Megatron's TopKRouter and against the pure routing function."""

import dataclasses

import pytest
import torch
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection, router_gating_linear
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.transformer_config import TransformerConfig

from emo_plugin.moe.router import EmoRouter
from emo_plugin.moe.routing_ids import build_routing_ids, split_routing_ids
from tests.helpers import tiny_config
from tests.moe.reference_routing import reference_route

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
SEQ, BATCH, HIDDEN = 24, 3, 32


def make_router(config, cls=EmoRouter):
    router = cls(config=config, pg_collection=get_default_pg_collection())
    router.set_layer_number(1)
    return router


def test_unrestricted_pool_without_shared_experts_reproduces_topk_router():
    emo_cfg = tiny_config(
        emo=dict(pool_min=8, pool_max=8, pool_eval=8, num_shared_experts=0, lb_coeff=0.0, z_loss_coeff=0.0)
    )
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


def reference_pool_size(salt: int, layer: int, seed: int, pool_min: int, pool_max: int) -> int:
    """The pool-size hash of emo_plugin/moe/routing.py written out for one document in Python integers."""
    mersenne31 = (1 << 31) - 1
    key = (seed * 1_000_003 + layer * 7919) % mersenne31
    x = (salt * 0x9E3779B1 + key) % mersenne31
    x ^= x >> 13
    x = (x * 0x5BD1E995) % mersenne31
    x ^= x >> 15
    return pool_min + x % (pool_max - pool_min + 1)


def reference_routing(logits_SBE, ids_BS, pool_size_of):
    """``reference_route``'s per-document loop plus the pool-masked logits: (probs, map, masked) [S·B, E]."""
    segments_SB, salts_SB = split_routing_ids(ids_BS.T)
    sizes = {}
    for b in range(BATCH):
        for doc in segments_SB[:, b].unique().tolist():
            sizes[(b, doc)] = pool_size_of(int(salts_SB[:, b][segments_SB[:, b] == doc][0]))
    probs, chosen, pools = reference_route(logits_SBE, segments_SB, lambda b, d: sizes[(b, d)], 2, 8)
    masked = logits_SBE.clone()
    for (b, doc), pool in pools.items():
        outside = torch.ones(8, dtype=torch.bool)
        outside[list(pool)] = False
        rows = segments_SB[:, b] == doc
        masked[rows, b] = masked[rows, b].masked_fill(outside, float("-inf"))
    return probs, chosen, masked.view(-1, 8), pools


@pytest.mark.parametrize("training", [True, False])
def test_router_matches_per_document_loop(training):
    """Pool sizes from the salt hash (training) or pool_eval, pools and gates from a loop over documents;
    padding tokens routed over all experts. fp32 softmax of the same logits: gates to 1e-6 relative."""
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

    if training:
        pool_size_of = lambda salt: reference_pool_size(salt, 1, config.emo.seed, 2, 6)  # noqa: E731
    else:
        pool_size_of = lambda salt: 3  # noqa: E731
    logits = (x @ router.weight.T).detach()
    expected_probs, expected_map, _, pools = reference_routing(logits, ids_BS, pool_size_of)
    if training:
        assert len({len(p) for p in pools.values()}) > 1, "documents should draw different pool sizes"
    assert torch.equal(routing_map, expected_map)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-6, atol=1e-7)


def test_load_balancing_z_loss_and_statistics_match_their_formulas():
    """Expected values from the per-document loop's routing (not the router's own map). Expert 7 is made
    unreachable (a large negative logit for every token) so the fraction of experts used is 7/8, not 1."""
    config = tiny_config(emo=dict(pool_min=3, pool_max=3, lb_coeff=0.1, z_loss_coeff=0.001))
    torch.manual_seed(2)
    router = make_router(config).train()
    get_moe_metrics_tracker().clear()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    x[..., 0] = 3.0
    with torch.no_grad():
        router.weight[7] = 0.0
        router.weight[7, 0] = -20.0
    padding = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    padding[0, :4] = True
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, padding_BS=padding, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    router(x)
    metrics = {k: v.values[0] for k, v in get_moe_metrics_tracker().metrics.items()}

    valid = ids_BS.T.reshape(-1) > 0
    logits = (x @ router.weight.T).detach()
    _, expected_map, masked, pools = reference_routing(logits, ids_BS, lambda salt: 3)
    counts = expected_map[valid].float().sum(0)
    f = counts / valid.sum()
    p = torch.softmax(masked, -1)[valid].mean(0)
    torch.testing.assert_close(metrics["load_balancing_loss"], (8 / 2) * (f * p).sum())
    torch.testing.assert_close(metrics["z_loss"], (torch.logsumexp(masked[valid], -1) ** 2).mean())
    assert metrics["emo_pool_size"] == 3.0
    assert counts[7] == 0 and metrics["emo_fraction_experts_used"] == 7 / 8
    torch.testing.assert_close(metrics["emo_load_imbalance"], counts.max() / counts.mean())
    doc_entropies = []
    for b, doc in pools:
        rows = (ids_BS.T[:, b] & ((1 << 20) - 1)) == doc
        mean_probs = torch.softmax(logits[rows, b], -1).mean(0)
        doc_entropies.append(-(mean_probs * mean_probs.log()).sum())
    torch.testing.assert_close(metrics["emo_doc_entropy"], torch.stack(doc_entropies).mean())


def aux_loss_weight_gradient(emo: dict, seed: int, padded_row: int, padded_tail: int):
    """Route random inputs through a training router and return ``(router, x, ids_BS, grad)``: ``grad`` is the
    router weight's gradient from the auxiliary losses alone (``probs * 0`` removes the LM path)."""
    torch.manual_seed(seed)
    router = make_router(tiny_config(emo=emo)).train()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    padding = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    padding[padded_row, -padded_tail:] = True
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, padding_BS=padding, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    probs, _ = router(x)
    (grad,) = torch.autograd.grad((probs * 0).sum(), router.weight)
    return router, x, ids_BS, grad


def test_z_loss_gradient_matches_autograd_of_its_formula():
    """Only the z-loss reaches the router weight (LM gradient zero, lb_coeff 0): the gradient equals autograd of
    coeff · mean over valid tokens of logsumexp(pool-masked logits)², a plain re-computation (fp32: 1e-5)."""
    router, x, ids_BS, grad = aux_loss_weight_gradient(
        dict(pool_min=3, pool_max=3, lb_coeff=0.0, z_loss_coeff=0.01), seed=4, padded_row=2, padded_tail=6
    )

    weight = router.weight.detach().clone().requires_grad_()
    logits = x @ weight.T
    _, _, masked, _ = reference_routing(logits.detach(), ids_BS, lambda salt: 3)
    in_pool = torch.isfinite(masked)
    valid = ids_BS.T.reshape(-1) > 0
    z = torch.logsumexp(logits.view(-1, 8).masked_fill(~in_pool, float("-inf"))[valid], -1)
    (expected,) = torch.autograd.grad(0.01 * (z**2).mean(), weight)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-8)


def test_router_refuses_to_train_without_routing_ids():
    router = make_router(tiny_config()).train()
    with pytest.raises(RuntimeError, match="no routing ids"):
        router(torch.randn(4, 1, HIDDEN))


def test_load_balancing_gradient_matches_autograd_of_its_formula():
    """Only the load-balancing loss reaches the router weight (LM gradient zero, z-loss 0), one rank: the
    gradient equals autograd of coeff · (R/k) Σ_i f_i P_i, with f_i from the per-document loop's routing
    (a constant) and P_i the mean pool-softmax score over valid tokens (fp32: 1e-5)."""
    router, x, ids_BS, grad = aux_loss_weight_gradient(
        dict(pool_min=3, pool_max=3, lb_coeff=0.1, z_loss_coeff=0.0), seed=6, padded_row=1, padded_tail=7
    )

    weight = router.weight.detach().clone().requires_grad_()
    logits = (x @ weight.T).view(-1, 8)
    _, expected_map, masked, _ = reference_routing(logits.detach().view(SEQ, BATCH, 8), ids_BS, lambda salt: 3)
    valid = ids_BS.T.reshape(-1) > 0
    f = expected_map[valid].float().sum(0) / valid.sum()
    p = torch.softmax(logits.masked_fill(~torch.isfinite(masked), float("-inf")), -1)[valid].mean(0)
    (expected,) = torch.autograd.grad(0.1 * (8 / 2) * (f * p).sum(), weight)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-8)


def test_router_errors_name_what_was_expected():
    stock_fields = {f.name: getattr(tiny_config(), f.name) for f in dataclasses.fields(TransformerConfig) if f.init}
    with pytest.raises(TypeError, match=r"^EmoRouter needs an EmoTransformerConfig, got TransformerConfig$"):
        EmoRouter(config=TransformerConfig(**stock_fields), pg_collection=get_default_pg_collection())
    router = make_router(tiny_config()).train()
    with pytest.raises(RuntimeError) as no_ids:
        router(torch.randn(4, 1, HIDDEN))
    assert str(no_ids.value) == (
        "EmoRouter got no routing ids in training: pass padding_mask=emo_plugin.moe.routing_ids.build_routing_ids(...) "
        "to GPTModel.forward (it reaches the router through EmoMoELayer)"
    )
    router.routing_ids_SB = torch.ones(3, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^routing ids have shape \(3, 1\), router tokens are \(4, 1\)$"):
        router(torch.randn(4, 1, HIDDEN))


def test_bf16_input_gives_fp32_router_logits():
    """moe_router_dtype="fp32": the gating matmul runs in fp32 even for bf16 hidden states (1e-6: one fp32 GEMM)."""
    router = make_router(tiny_config())
    x = torch.randn(5, 2, HIDDEN).bfloat16()
    logits = router.gating(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, (x.float() @ router.weight.float().T), rtol=1e-6, atol=1e-6)


def test_without_load_balancing_nothing_is_logged_and_document_entropy_uses_every_expert():
    """lb_coeff = 0: no load-balancing loss is computed or logged. The document entropy (mean over documents of
    the entropy of their mean softmax over all 8 experts) from a loop; every expert reachable here."""
    config = tiny_config(emo=dict(pool_min=3, pool_max=3, lb_coeff=0.0, z_loss_coeff=0.0))
    torch.manual_seed(8)
    router = make_router(config).train()
    get_moe_metrics_tracker().clear()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    router(x)
    metrics = {k: v.values[0] for k, v in get_moe_metrics_tracker().metrics.items()}
    assert "load_balancing_loss" not in metrics
    logits = (x @ router.weight.T).detach()
    segments_SB = ids_BS.T & ((1 << 20) - 1)
    entropies = []
    for b in range(BATCH):
        for doc in segments_SB[:, b].unique().tolist():
            mean_probs = torch.softmax(logits[segments_SB[:, b] == doc, b], -1).mean(0)
            assert mean_probs.min() > 1e-4
            entropies.append(-(mean_probs * mean_probs.log()).sum())
    torch.testing.assert_close(metrics["emo_doc_entropy"], torch.stack(entropies).mean())


def test_a_sequence_with_the_most_documents_is_routed_per_document():
    """The last sequence holds max_documents_per_sequence (16) documents, so its slots reach the end of the
    slot table [B · 17]: every token still gets its own document's pool and gates (per-document loop)."""
    config = tiny_config(emo=dict(pool_min=2, pool_max=6))
    torch.manual_seed(3)
    router = make_router(config).train()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    tokens = torch.randint(1, 4, (BATCH, SEQ))
    tokens[-1, :15] = 0
    ids_BS = build_routing_ids(tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16)
    segments_BS, _ = split_routing_ids(ids_BS)
    assert segments_BS[-1].max() == 16
    router.routing_ids_SB = ids_BS.T
    probs, routing_map = router(x)
    logits = (x @ router.weight.T).detach()
    expected_probs, expected_map, _, _ = reference_routing(
        logits, ids_BS, lambda salt: reference_pool_size(salt, 1, config.emo.seed, 2, 6)
    )
    assert torch.equal(routing_map, expected_map)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-6, atol=1e-7)


def test_eval_forward_with_autograd_on_computes_no_load_balancing():
    """Evaluation (module in eval mode) with autograd still enabled, as in a validation loop that forgot
    torch.no_grad(): no load-balancing loss, z-loss bookkeeping or routing statistics are logged."""
    config = tiny_config(emo=dict(lb_coeff=0.1))
    router = make_router(config).eval()
    get_moe_metrics_tracker().clear()
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    with torch.enable_grad():
        router(torch.randn(SEQ, BATCH, HIDDEN, requires_grad=True))
    assert dict(get_moe_metrics_tracker().metrics) == {}


@pytest.mark.parametrize("mtp_num_layers", [None, 2])
def test_logged_values_have_one_entry_per_decoder_and_mtp_layer(mtp_num_layers):
    """Megatron's tracker keeps one value per layer: num_layers (2) plus the MTP layers, if any."""
    config = tiny_config(emo=dict(lb_coeff=0.1), mtp_num_layers=mtp_num_layers)
    router = make_router(config).train()
    get_moe_metrics_tracker().clear()
    ids_BS = build_routing_ids(
        tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0, max_documents_per_sequence=16
    )
    router.routing_ids_SB = ids_BS.T
    router(torch.randn(SEQ, BATCH, HIDDEN))
    metrics = get_moe_metrics_tracker().metrics
    assert {"load_balancing_loss", "emo_pool_size"} <= set(metrics)
    expected_length = 2 + (mtp_num_layers or 0)
    assert {name: entry.values.shape[0] for name, entry in metrics.items()} == dict.fromkeys(metrics, expected_length)


def test_eos_grouping_starts_routes_each_eos_with_the_next_documents_pool():
    """Documents from AI2-style slicing at the EOS positions (tests/moe/test_routing_ids.py), pools and gates from
    the per-document loop, evaluation pools of 3; 'ends' gives other pools, so the grouping is what is tested."""
    from tests.moe.test_routing_ids import segments_by_slicing

    config = tiny_config(emo=dict(pool_min=2, pool_max=6, pool_eval=3))
    torch.manual_seed(4)
    router = make_router(config).eval()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    tokens = torch.randint(1, 5, (BATCH, SEQ))
    tokens[:, [5, 6, 13]] = 0  # the EOD id below; an empty document, and more than one document per sequence
    tokens[1, -1] = 0  # an EOS as the last token: a segment of its own
    logits = (x @ router.weight.T).detach()
    maps = {}
    for grouping in ("ends", "starts"):
        ids_BS = build_routing_ids(tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16,
                                   eos_grouping=grouping)
        router.routing_ids_SB = ids_BS.T
        probs, maps[grouping] = router(x)
        segments_SB = torch.tensor([segments_by_slicing(row, grouping) for row in tokens.tolist()]).T
        expected_probs, expected_map, _ = reference_route(logits.view(SEQ, BATCH, -1), segments_SB,
                                                          lambda b, d: 3, 2, 8)
        assert torch.equal(maps[grouping], expected_map)
        torch.testing.assert_close(probs, expected_probs, rtol=1e-6, atol=1e-7)
    assert not torch.equal(maps["ends"], maps["starts"])


def test_per_layer_pool_ranges_unrestricted_first_layer_and_pooled_second():
    """Layer 1 (Megatron's numbering) draws from [8, 8] = all 8 experts, layer 2 from [2, 4]: each router's
    training pools equal the per-document loop with that layer's sizes from the salt hash."""
    config = tiny_config(emo=dict(pool_min=2, pool_max=8, pool_min_per_layer=(8, 2), pool_max_per_layer=(8, 4)))
    torch.manual_seed(6)
    x = torch.randn(SEQ, BATCH, HIDDEN)
    ids_BS = build_routing_ids(tokens_BS=torch.randint(0, 4, (BATCH, SEQ)), eod_token_id=0,
                               max_documents_per_sequence=16, generator=torch.Generator().manual_seed(2))
    for layer, (low, high) in ((1, (8, 8)), (2, (2, 4))):
        router = make_router(config).train()
        router.set_layer_number(layer)
        router.routing_ids_SB = ids_BS.T
        probs, routing_map = router(x)
        logits = (x @ router.weight.T).detach()
        size_of = lambda salt: reference_pool_size(salt, layer, config.emo.seed, low, high)  # noqa: E731
        expected_probs, expected_map, _, pools = reference_routing(logits, ids_BS, size_of)
        sizes = {len(pool) for pool in pools.values()}
        assert sizes == {8} if layer == 1 else sizes <= {2, 3, 4} and len(sizes) > 1
        assert torch.equal(routing_map, expected_map)
        torch.testing.assert_close(probs, expected_probs, rtol=1e-6, atol=1e-7)
