"""emo-select-experts as a command: it writes the selection JSON and the pruned folder (refusing an existing
output), selects from k-shot task prompts as the library does, takes a per-layer budget, and refuses an ambiguous
--keep or a bad budget with a one-line error and exit 2. The selection itself is tested in
tests/evaluation/selection."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.data.helpers import cli_module
from tests.evaluation.selection.test_task_prompts import RECORDS, TEMPLATE
from tests.reliability import record


def test_select_experts_tool_writes_selection_and_pruned_model(hf_folder, documents_file, tmp_path, capsys):
    from emo_plugin.cli import select_experts as tool

    args = ["--model", str(hf_folder), "--documents", str(documents_file), "--keep", "4", "--max-tokens", "32",
            "--selection-json", str(tmp_path / "sel.json"), "--output", str(tmp_path / "pruned")]
    assert tool.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["after"]["bytes"] < summary["before"]["bytes"]
    saved = json.loads((tmp_path / "sel.json").read_text())
    assert saved["method"] == "greedy" and set(saved["layers"]) == {"0", "1"}
    assert (tmp_path / "pruned" / "tokenizer.json").is_file()
    assert tool.main(args) == 2  # output exists now: refused without --force


def test_select_experts_tool_selects_from_task_prompts(hf_folder, tmp_path, capsys):
    from transformers import AutoTokenizer

    from emo_plugin.cli import select_experts as tool
    from emo_plugin.evaluation.selection import select_experts
    from emo_plugin.hf import EmoForCausalLM

    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    typed = TEMPLATE.replace("\n", "\\n")  # as typed in a shell: backslash n
    args = ["--model", str(hf_folder), "--task-prompts", str(task), "--template", typed, "--num-shots", "2",
            "--num-examples", "all", "--keep", "4", "--selection-json", str(tmp_path / "sel.json")]
    assert tool.main(args) == 0
    saved = json.loads((tmp_path / "sel.json").read_text())
    assert saved["num_documents"] == 3 and saved["num_shots"] == 2

    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    model = EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
    eos = model.config.eos_token_id
    shots = "Q: q0?\nA: a0.\n\nQ: q1?\nA: a1.\n\n"
    docs = [torch.tensor([tokenizer.encode(shots + f"Q: q{i}?\nA: ", add_special_tokens=False)
                          + tokenizer.encode(f"a{i}.", add_special_tokens=False) + [eos]]) for i in (2, 3, 4)]
    expected = select_experts(model, docs, method="greedy", keep=4)
    assert saved["layers"] == {str(k): v for k, v in expected.items()}

    assert tool.main(args[:-2] + ["--selection-json", str(tmp_path / "s2.json"), "--template", "{question}"]) == 2
    assert "must contain {answer} exactly once" in capsys.readouterr().err


def test_select_experts_tool_takes_a_per_layer_budget(hf_folder, documents_file, tmp_path, capsys):
    from emo_plugin.cli import select_experts as tool

    base = ["--model", str(hf_folder), "--documents", str(documents_file), "--max-tokens", "32",
            "--selection-json", str(tmp_path / "sel.json")]
    assert tool.main(base + ["--keep-per-layer", "100%,4", "--output", str(tmp_path / "pruned")]) == 0
    capsys.readouterr()
    saved = json.loads((tmp_path / "sel.json").read_text())
    assert saved["keep"] == [1.0, 4] and [len(saved["layers"][k]) for k in ("0", "1")] == [8, 3]
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["num_experts_per_layer"] == [9, 4]
    assert tool.main(base + ["--keep-per-layer", "4x3"]) == 2
    assert "--keep-per-layer has 3 entries, expected one per layer (2 layers)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --keep and --keep-per-layer exclude each other
        tool.main(base + ["--keep", "4", "--keep-per-layer", "4,4"])


@pytest.mark.parametrize("argv, expected, case", [
    (["--keep", "1.5"], "'1.5' is neither a fraction <= 1 nor a whole count of slots; write e.g. 1 or 2 slots",
     "select_experts --keep 1.5"),
    (["--keep", "0"], "'0': expected a fraction in (0, 1]", "select_experts --keep 0"),
    (["--keep", "150%"], "'150%': expected a fraction in (0, 1]", "select_experts --keep 150%"),
])
def test_select_experts_refuses_ambiguous_keep(argv, expected, case, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli_module("select_experts").main(["--model", str(tmp_path), "--documents", "d.jsonl",
                                          "--selection-json", str(tmp_path / "s.json"), *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err and "Traceback" not in err
    # argparse names the program after sys.argv[0] (pytest here); the user sees the tool's name
    seen = err.strip().splitlines()[-1].replace(f"{Path(sys.argv[0]).name}:", "select_experts.py:", 1)
    record(case, seen=seen, kept="nothing written", area="selection")
