"""Expert selection and physical pruning of an EMO HF model."""

import json

import pytest
import torch

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection import select_experts, write_pruned_checkpoint
from tests.evaluation.selection.test_layer_budget import mean_probability_top


@pytest.mark.parametrize("method", ["greedy", "easy_ep", "random"])
def test_every_layer_keeps_the_requested_count(model, documents, method):
    selection = select_experts(model, documents, method=method, keep=4)  # 4 of 9 slots = 3 routed + shared
    assert sorted(selection) == [0, 1]
    for kept in selection.values():
        assert len(kept) == 3 and kept == sorted(set(kept)) and all(0 <= e < 8 for e in kept)


def test_random_is_seeded(model, documents):
    a = select_experts(model, documents, method="random", keep=4, seed=1)
    assert a == select_experts(model, documents, method="random", keep=4, seed=1)
    assert a != select_experts(model, documents, method="random", keep=4, seed=2)


def test_greedy_keeps_the_most_probable_experts_given_earlier_layers_pruned(model, documents):
    """Recomputed here from each MoE block's inputs: layer l keeps the top-3 routed experts by mean router
    softmax over all calibration tokens, with layers < l restricted to their choice (docs/method.md §10)."""
    selection = select_experts(model, documents, method="greedy", keep=4)
    for layer_idx in range(2):
        kept = {}
        for earlier in range(layer_idx):
            kept[earlier] = torch.zeros(8, dtype=torch.bool)
            kept[earlier][selection[earlier]] = True
        assert selection[layer_idx] == mean_probability_top(model, documents, layer_idx, 3, kept)


def test_keep_fraction_too_small_is_refused(model, documents):
    with pytest.raises(ConversionError, match="fewer than the 2"):
        select_experts(model, documents, method="greedy", keep=0.2)


def test_pruned_checkpoint_equals_masked_full_model(model, documents, hf_folder, tmp_path):
    from emo_plugin.hf import EmoForCausalLM

    selection = select_experts(model, documents, method="easy_ep", keep=5)
    sizes = write_pruned_checkpoint(hf_folder, tmp_path / "pruned", selection, max_shard_size="30KB")
    pruned = EmoForCausalLM.from_pretrained(str(tmp_path / "pruned"), dtype=torch.float32).eval()
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["num_experts_per_layer"] == [5, 5] and config["num_shared_experts_per_layer"] == [1, 1]
    assert pruned.model.layers[0].mlp.gate.weight.shape == (5, 32) and len(pruned.model.layers[1].mlp.experts) == 5
    expert_params = 3 * 16 * 32
    removed = 2 * 4 * (expert_params + 32)  # 4 experts and their router rows, 2 layers
    assert sizes["before"]["parameters"] - sizes["after"]["parameters"] == removed
    assert sizes["after"]["bytes"] == 4 * sizes["after"]["parameters"]

    model.set_expert_mask({i: torch.isin(torch.arange(8), torch.tensor(kept)) for i, kept in selection.items()})
    tokens = torch.randint(3, 64, (2, 19), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(pruned(tokens).logits, model(tokens).logits, rtol=1e-5, atol=1e-5)
    out = pruned.generate(tokens[:1, :4], max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape == (1, 8)
