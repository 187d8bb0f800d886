"""emo-reinsert-experts as a command: a masked full-size fine-tune (with --selection) and its pruned copy both
reinsert to the tuned model, and mismatched inputs, a subset without its selection or an output over an input are
refused by name before anything is written. Re-insertion itself is tested in
tests/evaluation/selection/test_reinsert.py."""

import json
import shutil

import pytest
import torch

from emo_plugin.cli import reinsert_experts
from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection import write_pruned_checkpoint
from tests.evaluation.selection.pruned_subset import SELECTION, expert, rewrite, tensors


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
