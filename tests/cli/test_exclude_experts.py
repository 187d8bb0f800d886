"""emo-exclude-experts as a command: it prints the report it writes and turns a refused --drop-per-layer into a
one-line error and exit 2. The experiment itself is tested in
tests/evaluation/analysis/test_exclusion_experiment.py."""

import json

import pytest

from emo_plugin.cli import exclude_experts
from tests.evaluation.analysis.test_exclusion_experiment import check_results_of_dropping_three

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_exclude_experts_reports_every_domain_before_and_after(tiny_checkpoint, tmp_path, capsys):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    argv = ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer),
            "--out", str(tmp_path / "out"), "--domain", "code", "--drop-per-layer", "3", "--calib-docs", "2",
            "--max-eval-tokens-per-domain", "300"]
    assert exclude_experts.main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    check_results_of_dropping_three(results)
    printed = capsys.readouterr().out
    assert "| code (target) |" in printed and printed == (tmp_path / "out" / "results.md").read_text()
    argv[argv.index("--drop-per-layer") + 1] = "7"
    argv[argv.index("--out") + 1] = str(tmp_path / "o2")
    assert exclude_experts.main(argv) == 2
    assert "--drop-per-layer 7 leaves layer 0 1 routed experts, fewer than the 2" in capsys.readouterr().err
