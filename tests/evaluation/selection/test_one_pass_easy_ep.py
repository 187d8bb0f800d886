"""``easy_ep_one_pass``: AI2's Easy-EP, every layer scored in one pass through the unpruned model, clamped at 0."""

import pytest
import torch
import torch.nn.functional as F

from emo_plugin.evaluation.selection import METHODS, select_experts


def one_pass_reference(model, documents, count):
    """Plain loop: capture each MoE block's input and output in unpruned forwards, then per layer
    score_i = Σ_t g_t,i · ‖E_i(h_t)‖ · (1 − cos(h_t, h_t + MoE(h_t))) / N, clamped at 0; keep the top ``count``."""
    model.set_expert_mask(None)
    captured = {i: [] for i in range(2)}
    hooks = [
        layer.mlp.register_forward_hook(
            lambda module, args, output, i=i: captured[i].append((args[0].reshape(-1, 32), output.reshape(-1, 32)))
        )
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        for ids in documents:
            model(input_ids=ids, use_cache=False)
    for hook in hooks:
        hook.remove()
    chosen = {}
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            block = layer.mlp
            h = torch.cat([x for x, _ in captured[i]])
            out = torch.cat([y for _, y in captured[i]])
            probs = torch.softmax(h @ block.gate.weight[:8].T, dim=-1)
            weights, experts = probs.topk(2, dim=-1)
            change = 1 - F.cosine_similarity(h, h + out, dim=-1)
            scores = torch.zeros(8, dtype=torch.float64)
            for t in range(h.shape[0]):
                for g, e in zip(weights[t].tolist(), experts[t].tolist()):
                    scores[e] += g * block.experts[e](h[t : t + 1]).norm().item() * change[t].item()
            scores = (scores / h.shape[0]).clamp(min=0)
            top = scores.topk(count + 1)
            assert top.values[count - 1] - top.values[count] > 1e-6, "near tie: the expectation depends on rounding"
            chosen[i] = sorted(top.indices[:count].tolist())
    return chosen


def test_one_pass_matches_the_plain_loop(model, documents):
    assert not model.config.norm_topk_prob  # the reference uses the raw top-k softmax weights
    expected = one_pass_reference(model, documents, 3)
    assert select_experts(model, documents, method="easy_ep_one_pass", keep=4) == expected


def test_one_pass_and_layer_wise_are_kept_apart(model, documents):
    """The first layer has no earlier layers to prune, so both agree there; the methods stay two names."""
    assert METHODS["easy_ep"].conditioned and not METHODS["easy_ep_one_pass"].conditioned
    one_pass = select_experts(model, documents, method="easy_ep_one_pass", keep=4)
    layer_wise = select_experts(model, documents, method="easy_ep", keep=4)
    assert one_pass[0] == layer_wise[0]


@pytest.mark.parametrize("keep", [[1.0, 4], [4, 1.0]])
def test_one_pass_takes_per_layer_budgets(model, documents, keep):
    selection = select_experts(model, documents, method="easy_ep_one_pass", keep=keep)
    assert [len(selection[i]) for i in range(2)] == [8 if k == 1.0 else 3 for k in keep]
