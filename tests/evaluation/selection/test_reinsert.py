"""Re-insertion: a fine-tuned expert subset goes back into the full model at the experts' original slots.

The expectations are written from the HF tensor names and the pruning order (kept experts ascending, then the
shared slot), not from the weight map the code under test reads. The command emo-reinsert-experts (a masked
full-size subset, refused inputs) is tested in tests/cli/test_reinsert_experts.py.
"""

import json

import torch

from emo_plugin.evaluation.selection import write_reinserted_checkpoint
from tests.evaluation.selection.pruned_subset import SELECTION, expert, rewrite, tensors

SLOTS, SHARED = 9, 8  # the tiny model: 8 routed experts + 1 shared (the last slot)
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def router(layer: int) -> str:
    return f"model.layers.{layer}.mlp.gate.weight"


def pruned_slot(layer: int, slot: int) -> int | None:
    """Where pruning put an original slot (None: dropped)."""
    kept = sorted(SELECTION[layer])
    return len(kept) if slot == SHARED else (kept.index(slot) if slot in kept else None)


def logits(folder, tokens):
    from emo_plugin.hf import EmoForCausalLM

    with torch.no_grad():
        return EmoForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()(tokens).logits


def test_changed_subset_lands_at_the_original_slots_and_the_rest_is_bit_identical(hf_folder, pruned, tmp_path):
    rewrite(pruned, lambda name, t: t + 0.5)  # the "fine-tune": every tensor of the subset changed
    summary = write_reinserted_checkpoint(hf_folder, pruned, tmp_path / "merged", SELECTION)
    assert summary["reinserted_slots"] == {0: [1, 4, 6, 8], 1: [0, 3, 7, 8]}
    full, subset, merged = tensors(hf_folder), tensors(pruned), tensors(tmp_path / "merged")
    assert merged.keys() == full.keys()
    expected_names = set()
    for layer in SELECTION:
        for slot in range(SLOTS):
            position = pruned_slot(layer, slot)
            for proj in PROJECTIONS:
                name = expert(layer, slot, proj)
                source = full[name] if position is None else subset[expert(layer, position, proj)]
                assert torch.equal(merged[name], source), name
                assert position is None or not torch.equal(merged[name], full[name]), name
                expected_names.add(name)
            row = full[router(layer)][slot] if position is None else subset[router(layer)][position]
            assert torch.equal(merged[router(layer)][slot], row), (layer, slot)
        expected_names.add(router(layer))
    others = full.keys() - expected_names
    assert "model.embed_tokens.weight" in others and "lm_head.weight" in others
    assert "model.layers.1.self_attn.q_proj.weight" in others and "model.norm.weight" in others
    for name in others:
        assert torch.equal(merged[name], subset[name]) and not torch.equal(merged[name], full[name]), name
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["num_experts_per_layer"] is None
    assert (tmp_path / "merged" / "tokenizer.model").read_bytes() == (hf_folder / "tokenizer.model").read_bytes()


def test_unchanged_subset_reproduces_the_full_model_exactly(hf_folder, pruned, tmp_path):
    write_reinserted_checkpoint(hf_folder, pruned, tmp_path / "merged", SELECTION)
    full, merged = tensors(hf_folder), tensors(tmp_path / "merged")
    assert merged.keys() == full.keys() and all(torch.equal(merged[n], full[n]) for n in full)
    tokens = torch.randint(3, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(tmp_path / "merged", tokens), logits(hf_folder, tokens))


def test_result_loads_with_transformers_and_generates(hf_folder, pruned, tmp_path):
    from transformers import AutoModelForCausalLM

    rewrite(pruned, lambda name, t: t * 1.01)
    write_reinserted_checkpoint(hf_folder, pruned, tmp_path / "merged", SELECTION)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), trust_remote_code=True, dtype=torch.float32)
    out = model.generate(torch.tensor([[5, 9, 11, 3]]), max_new_tokens=4, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    assert out.shape == (1, 8)
