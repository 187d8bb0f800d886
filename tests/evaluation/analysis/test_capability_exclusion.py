"""Capability exclusion: which experts a domain loses and how their probabilities are measured (the experiment:
test_exclusion_experiment.py; the command: tests/cli/test_exclude_experts.py)."""

import numpy as np
import pytest
import torch

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.capability_exclusion import experts_to_drop, mean_router_probabilities
from tests.evaluation.analysis.test_subset_evaluation import VOCAB, random_documents
from tests.evaluation.analysis.tiny_checkpoint import tiny_emo_model

PROBS = {
    "code": [np.array([0.40, 0.30, 0.20, 0.10]), np.array([0.1, 0.2, 0.3, 0.4])],
    "law": [np.array([0.10, 0.35, 0.05, 0.50]), np.array([0.25, 0.25, 0.25, 0.25])],
    "math": [np.array([0.05, 0.05, 0.10, 0.80]), np.array([0.7, 0.1, 0.1, 0.1])],
}


def reference_drop(target, drop, ratio):
    """Plain loop: per layer, walk the target's experts from most to least probable, skipping an expert some
    other domain uses at least ``ratio`` times as much, until ``drop`` are taken."""
    dropped = {}
    for layer in range(2):
        target_probs = [float(p) for p in PROBS[target][layer]]
        taken = []
        for expert in sorted(range(4), key=lambda e: (-target_probs[e], e)):
            others = [PROBS[name][layer][expert] for name in PROBS if name != target]
            if ratio is not None and max(others) >= ratio * target_probs[expert]:
                continue
            if len(taken) < drop:
                taken.append(expert)
        dropped[layer] = sorted(taken)
    return dropped


@pytest.mark.parametrize("target, drop, ratio", [("code", 2, None), ("code", 2, 1.0), ("law", 1, 0.9),
                                                 ("math", 2, None)])
def test_drops_the_targets_most_used_experts(target, drop, ratio):
    expected = reference_drop(target, drop, ratio)
    assert experts_to_drop(PROBS, target, drop, ratio) == expected
    if target == "code" and ratio == 1.0:
        assert expected == {0: [0, 2], 1: [2, 3]}  # expert 1 of layer 0 is spared: law uses it more


def test_refusals_name_the_flag():
    with pytest.raises(AnalysisError, match="--domain 'poetry': no such domain"):
        experts_to_drop(PROBS, "poetry", 1)
    with pytest.raises(AnalysisError, match="layer 0: only 0 experts can be dropped"):
        experts_to_drop(PROBS, "math", 2, 0.1)


def test_mean_router_probabilities_are_the_token_mean_of_the_softmax():
    model = tiny_emo_model(VOCAB)
    documents = random_documents(3, seed=6)
    measured = mean_router_probabilities(model, documents, batch_size=2, pad_id=0, device="cpu")
    inputs = {0: [], 1: []}
    hooks = [layer.mlp.register_forward_hook(lambda m, args, out, i=i: inputs[i].append(args[0].reshape(-1, 32)))
             for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        for doc in documents:
            model(input_ids=torch.tensor([doc]), use_cache=False)
    for hook in hooks:
        hook.remove()
    for i, layer in enumerate(model.model.layers):
        expected = torch.softmax(torch.cat(inputs[i]) @ layer.mlp.gate.weight[:8].T, dim=-1).double().mean(0)
        np.testing.assert_allclose(measured[i], expected.detach().numpy(), rtol=1e-5, atol=1e-7)
