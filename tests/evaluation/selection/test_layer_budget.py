"""Per-layer keep budgets (--keep-per-layer): spelling, validation against the model, selection and pruning."""

import json

import pytest
import torch

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection import select_experts, write_pruned_checkpoint
from emo_plugin.evaluation.selection.layer_budget import parse_layer_budget


@pytest.mark.parametrize("text, expected", [
    ("16,16,8,8", [16, 16, 8, 8]),
    ("100%x2,8x3", [1.0, 1.0, 8, 8, 8]),
    ("0.5, 25%", [0.5, 0.25]),
    ("4x1", [4]),
])
def test_spellings(text, expected):
    assert parse_layer_budget(text) == expected


@pytest.mark.parametrize("text, message", [
    ("16,,8", "entry 2 is empty"),
    ("8x0", "'x' must be followed by a layer count >= 1"),
    ("8xa", "'x' must be followed by a layer count >= 1"),
    ("16,1.5", "entry 2: '1.5' is neither a fraction"),
])
def test_bad_spellings_name_the_entry(text, message):
    with pytest.raises(ValueError, match=message):
        parse_layer_budget(text)


def mean_probability_top(model, documents, layer_idx, count, masks):
    """Reference: the ``count`` routed experts of largest mean router softmax over every calibration token,
    computed from the MoE block's inputs with ``masks`` on the earlier layers."""
    model.set_expert_mask(masks)
    block, inputs = model.model.layers[layer_idx].mlp, []
    hook = block.register_forward_hook(lambda module, args, output: inputs.append(args[0].reshape(-1, 32)))
    with torch.no_grad():
        for ids in documents:
            model(input_ids=ids, use_cache=False)
    hook.remove()
    mean_probs = torch.softmax(torch.cat(inputs) @ block.gate.weight[:8].T, dim=-1).mean(0)
    top = mean_probs.topk(count + 1)
    assert top.values[count - 1] - top.values[count] > 1e-4, "near tie: the expectation would depend on rounding"
    return sorted(top.indices[:count].tolist())


def test_each_layer_keeps_its_own_count(model, documents):
    """Layer 0 keeps all 9 slots, layer 1 keeps 4 slots = 3 routed + shared; layer 1 is then scored on the
    unpruned layer 0, so its choice is the plain top-3 of the full model."""
    selection = select_experts(model, documents, method="greedy", keep=[1.0, 4])
    assert selection[0] == list(range(8))
    assert selection[1] == mean_probability_top(model, documents, 1, 3, None)


def test_uniform_and_per_layer_agree_when_equal(model, documents):
    assert select_experts(model, documents, keep=[5, 5]) == select_experts(model, documents, keep=5)


@pytest.mark.parametrize("keep, message", [
    ([4], r"--keep-per-layer has 1 entries, expected one per layer \(2 layers\)"),
    ([4, 4, 4], r"--keep-per-layer has 3 entries"),
    ([4, 2], r"--keep-per-layer layer 1: 2 leaves 2 of 9 slots = 1 routed experts, fewer than the 2"),
    ([10, 4], r"--keep-per-layer layer 0: 10: the layer has only 9 expert slots"),
])
def test_budget_is_checked_against_the_model(model, documents, keep, message):
    with pytest.raises(ConversionError, match=message):
        select_experts(model, documents, keep=keep)


def test_per_layer_pruned_checkpoint_equals_masked_model(model, documents, hf_folder, tmp_path):
    from emo_plugin.hf import EmoForCausalLM

    selection = select_experts(model, documents, method="greedy", keep=[7, 3])
    assert [len(selection[0]), len(selection[1])] == [6, 2]
    write_pruned_checkpoint(hf_folder, tmp_path / "pruned", selection)
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["num_experts_per_layer"] == [7, 3]
    pruned = EmoForCausalLM.from_pretrained(str(tmp_path / "pruned"), dtype=torch.float32).eval()
    model.set_expert_mask({i: torch.isin(torch.arange(8), torch.tensor(kept)) for i, kept in selection.items()})
    tokens = torch.randint(3, 64, (2, 15), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(pruned(tokens).logits, model(tokens).logits, rtol=1e-5, atol=1e-5)


def test_budget_fits_each_layer_of_a_model_with_per_layer_expert_counts(documents):
    """A pruned model whose layers differ (7 and 3 slots): each entry is checked against its own layer."""
    from tests.evaluation.analysis.tiny_checkpoint import tiny_emo_model

    model = tiny_emo_model(64, num_experts_per_layer=[7, 3], num_shared_experts_per_layer=[1, 1])
    selection = select_experts(model, documents, method="greedy", keep=[5, 1.0])
    assert [len(selection[0]), len(selection[1])] == [4, 2]
    assert selection[1] == [0, 1]
    with pytest.raises(ConversionError, match=r"--keep-per-layer layer 1: 4: the layer has only 3 expert slots"):
        select_experts(model, documents, keep=[5, 4])
