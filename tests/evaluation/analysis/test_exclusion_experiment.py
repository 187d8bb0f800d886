"""The capability-exclusion experiment (emo_plugin/evaluation/analysis/exclusion_experiment.py) on a tiny
checkpoint: the target's most used experts are dropped in every layer, every domain is measured before and after,
and a drop that leaves a layer too few experts is refused. The command around it is tested in
tests/cli/test_exclude_experts.py."""

import json
import math

import pytest

from emo_plugin.cli import exclude_experts
from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.exclusion_experiment import markdown_report, run_exclusion_experiment


def experiment_args(tiny_checkpoint, out, drop):
    """The settings as emo-exclude-experts parses them (the experiment's ``args``)."""
    checkpoint, corpus, tokenizer = tiny_checkpoint
    return exclude_experts.build_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
         "--domain", "code", "--drop-per-layer", str(drop), "--calib-docs", "2", "--max-eval-tokens-per-domain", "300"]
    )


def check_results_of_dropping_three(results: dict) -> None:
    """What an exclusion experiment on the tiny checkpoint with target 'code' and 3 experts dropped per layer
    must give (also checked on the output of the emo-exclude-experts command, tests/cli)."""
    assert results["domain"] == "code" and set(results["domains"]) == {"code", "cooking", "law"}
    assert all(len(ids) == 3 and ids == sorted(set(ids)) for ids in results["dropped_experts"].values())
    for entry in results["domains"].values():
        assert math.isfinite(entry["excluded_loss"])
        assert entry["loss_rise"] == pytest.approx(entry["excluded_loss"] - entry["full_loss"])
        assert entry["excluded_loss"] != entry["full_loss"]


def test_drops_the_targets_experts_and_measures_every_domain(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    results = run_exclusion_experiment(experiment_args(tiny_checkpoint, out, 3))
    assert capsys.readouterr().out == ""  # printing is the command's
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    check_results_of_dropping_three(results)
    report = (out / "results.md").read_text()
    assert report == markdown_report(results) and "| code (target) |" in report


def test_refuses_a_drop_that_leaves_a_layer_too_few_experts(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(AnalysisError, match="--drop-per-layer 7 leaves layer 0 1 routed experts, fewer than the 2"):
        run_exclusion_experiment(experiment_args(tiny_checkpoint, out, 7))
    assert not out.exists()
