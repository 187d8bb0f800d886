"""Re-insertion: a fine-tuned expert subset goes back into the full model at the experts' original slots.

The expectations are written from the HF tensor names and the pruning order (kept experts ascending, then the
shared slot), not from the weight map the code under test reads.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from emo_plugin.cli import reinsert_experts
from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection import write_pruned_checkpoint, write_reinserted_checkpoint

SELECTION = {0: [6, 1, 4], 1: [7, 0, 3]}  # unsorted on purpose: pruning orders the kept experts ascending
SLOTS, SHARED = 9, 8  # the tiny model: 8 routed experts + 1 shared (the last slot)
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def tensors(folder) -> dict[str, torch.Tensor]:
    return {name: t for file in sorted(folder.glob("*.safetensors")) for name, t in load_file(file).items()}


def rewrite(folder, change) -> None:
    """Replace every tensor of the folder's shards by ``change(name, tensor)`` (a tensor, or None to drop it)."""
    for file in folder.glob("*.safetensors"):
        changed = {name: change(name, t) for name, t in load_file(file).items()}
        save_file({n: t for n, t in changed.items() if t is not None}, file, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        record = json.loads(index.read_text())
        record["weight_map"] = {n: f for n, f in record["weight_map"].items() if n in tensors(folder)}
        index.write_text(json.dumps(record))


def expert(layer: int, slot: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.experts.{slot}.{proj}.weight"


def router(layer: int) -> str:
    return f"model.layers.{layer}.mlp.gate.weight"


def pruned_slot(layer: int, slot: int) -> int | None:
    """Where pruning put an original slot (None: dropped)."""
    kept = sorted(SELECTION[layer])
    return len(kept) if slot == SHARED else (kept.index(slot) if slot in kept else None)


@pytest.fixture
def pruned(hf_folder, tmp_path):
    write_pruned_checkpoint(hf_folder, tmp_path / "pruned", SELECTION)
    return tmp_path / "pruned"


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


def test_masked_full_size_finetune_and_its_pruned_copy_reinsert_to_the_finetuned_model(hf_folder, model, tmp_path):
    """Fine-tuning with only the kept experts trainable leaves the others untouched, so putting the tuned subset
    back (full-size with --selection, or pruned first) gives exactly the tuned model."""
    routed = model.num_routed_experts(0)
    model.set_expert_mask({i: torch.isin(torch.arange(routed), torch.tensor(ids)) for i, ids in SELECTION.items()})
    tokens = torch.randint(3, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    with model.training_only_kept_experts():
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
        for _ in range(2):
            optimizer.zero_grad()
            model(input_ids=tokens, labels=tokens).loss.backward()
            optimizer.step()
    model.set_expert_mask(None)
    model.save_pretrained(tmp_path / "tuned")
    (tmp_path / "selection.json").write_text(json.dumps({str(k): v for k, v in SELECTION.items()}))
    argv = ["--full", hf_folder, "--subset", tmp_path / "tuned", "--selection", tmp_path / "selection.json"]
    assert reinsert_experts.main([*map(str, argv), "--output", str(tmp_path / "from_full_size")]) == 0
    write_pruned_checkpoint(tmp_path / "tuned", tmp_path / "tuned_pruned", SELECTION)
    assert reinsert_experts.main(
        ["--full", str(hf_folder), "--subset", str(tmp_path / "tuned_pruned"), "--output", str(tmp_path / "merged")]
    ) == 0
    full, tuned = tensors(hf_folder), tensors(tmp_path / "tuned")
    for folder in ("from_full_size", "merged"):
        merged = tensors(tmp_path / folder)
        assert merged.keys() == tuned.keys() and all(torch.equal(merged[n], tuned[n]) for n in tuned), folder
    assert not torch.equal(tuned[expert(0, 1, "up_proj")], full[expert(0, 1, "up_proj")])
    assert torch.equal(tuned[expert(0, 2, "up_proj")], full[expert(0, 2, "up_proj")])


def test_result_loads_with_transformers_and_generates(hf_folder, pruned, tmp_path):
    from transformers import AutoModelForCausalLM

    rewrite(pruned, lambda name, t: t * 1.01)
    write_reinserted_checkpoint(hf_folder, pruned, tmp_path / "merged", SELECTION)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), trust_remote_code=True, dtype=torch.float32)
    out = model.generate(torch.tensor([[5, 9, 11, 3]]), max_new_tokens=4, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    assert out.shape == (1, 8)


O_PROJ = "model.layers.1.self_attn.o_proj.weight"


def drop_column(name, t):
    return t[:, :-1].contiguous() if name == O_PROJ else t


def half_precision(name, t):
    return t.half() if name == O_PROJ else t


def drop_tensor(name, t):
    return None if name == O_PROJ else t


def other_rope(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"rope_theta": 1234.0}))


def other_tokenizer(folder):
    (folder / "tokenizer.model").write_bytes((folder / "tokenizer.model").read_bytes() + b"\0")


def no_config(folder):
    (folder / "config.json").unlink()


def other_selection(folder):
    (folder / "expert_selection.json").write_text(json.dumps({"0": [1, 4], "1": [0, 3, 7]}))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda f: rewrite(f, drop_column), f"tensor '{O_PROJ}' has shape (32, 31), expected (32, 32)"),
        (lambda f: rewrite(f, half_precision), f"tensor '{O_PROJ}' is torch.float16, the full model's is torch.float"),
        (lambda f: rewrite(f, drop_tensor), f"checkpoint has no tensor '{O_PROJ}'"),
        (other_rope, "config.json: rope_theta is 1234.0, but"),
        (other_tokenizer, "tokenizer.model differs from the full model's"),
        (other_selection, "layer 0: the subset has 4 expert slots, but the selection keeps 2 routed"),
        (no_config, "pruned: not a Hugging Face checkpoint folder (no config.json)"),
    ],
    ids=["shape", "dtype", "missing", "record", "tokenizer", "selection", "config"],
)
def test_mismatched_inputs_are_refused_by_name_and_nothing_is_written(hf_folder, pruned, tmp_path, capsys, spoil,
                                                                      message):
    spoil(pruned)
    argv = ["--full", str(hf_folder), "--subset", str(pruned), "--output", str(tmp_path / "merged")]
    assert reinsert_experts.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("emo-reinsert-experts: conversion error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "merged").exists()


def test_a_subset_without_its_selection_is_refused(hf_folder, tmp_path):
    shutil.copytree(hf_folder, tmp_path / "copy")
    with pytest.raises(ConversionError, match="expert_selection.json does not exist: pass --selection"):
        reinsert_experts.reinsert(
            reinsert_experts.build_parser().parse_args(
                ["--full", str(hf_folder), "--subset", str(tmp_path / "copy"), "--output", str(tmp_path / "out")]
            )
        )


def test_an_output_over_an_input_is_refused_even_with_force(hf_folder, pruned, capsys):
    before = tensors(pruned)
    argv = ["--full", str(hf_folder), "--subset", str(pruned), "--output", str(pruned), "--force"]
    assert reinsert_experts.main(argv) == 2
    assert f"--output {pruned} is the input {pruned}" in capsys.readouterr().err
    assert tensors(pruned).keys() == before.keys()
