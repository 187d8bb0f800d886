"""The subset experiment (emo_plugin/evaluation/analysis/subset_experiment.py) on a tiny checkpoint: 100% reproduces
the full model, the kept counts follow the fractions and per-layer budgets, task prompts calibrate, fine-tuning
reports finite losses, and the results, report and selections are written. The command around it is tested in
tests/cli/test_evaluate_subsets.py."""

import json
import math

import pytest

from emo_plugin.cli import evaluate_subsets
from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.subset_experiment import mean_over_domains, run_subset_experiment, subset_labels
from tests.evaluation.analysis.test_modularity_analysis import finite_numbers
from tests.evaluation.analysis.tiny_checkpoint import DOMAIN_WORDS


def experiment_args(tiny_checkpoint, out, *options):
    """The settings as emo-evaluate-subsets parses them (the experiment's ``args``)."""
    checkpoint, corpus, tokenizer = tiny_checkpoint
    return evaluate_subsets.build_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
         *options]
    )


def write_task_file(path):
    """Two questions per domain of the tiny corpus: one shot, one query."""
    with path.open("w") as stream:
        for domain, words in DOMAIN_WORDS.items():
            for i in range(2):
                record = {"question": " ".join(words[i : i + 4]), "answer": words[i + 5], "domain": domain}
                stream.write(json.dumps(record) + "\n")
    return path


def test_reports_losses_and_reproduces_the_full_model(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "subsets"
    args = experiment_args(tiny_checkpoint, out, "--calib-docs", "2", "--max-eval-tokens-per-domain", "200",
                           "--fractions", "1", "0.5", "0.34", "--finetune-steps", "2", "--finetune-lr", "1e-3")
    results = run_subset_experiment(args)
    assert capsys.readouterr().out == ""  # printing is the command's
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["full_model_reproduced_by_100%"] is True
    for domain in results["domains"].values():
        assert domain["subsets"]["100%"]["loss"] == domain["full_loss"]
        assert domain["subsets"]["34%"]["kept_experts_per_layer"] == [2, 2]  # 3 of 9 slots, one of them shared
        assert math.isfinite(domain["subsets"]["34%"]["finetuned_loss"])
    assert all(math.isfinite(n) for n in finite_numbers(results))
    selection = json.loads((out / "selections" / "law" / "50%.json").read_text())
    assert {layer: len(ids) for layer, ids in selection.items()} == {"0": 3, "1": 3}
    table = (out / "results.md").read_text()
    assert "| **mean** |" in table and "34%" in table


def test_compares_per_layer_budgets_and_selects_from_task_prompts(tiny_checkpoint, tmp_path):
    out = tmp_path / "subsets"
    args = experiment_args(tiny_checkpoint, out, "--max-eval-tokens-per-domain", "100000", "--fractions", "1", "0.5",
                           "--layer-budgets", "100%,3", "7x2", "--task-prompts",
                           str(write_task_file(tmp_path / "task.jsonl")), "--num-shots", "1", "--finetune-epochs", "1",
                           "--finetune-loss", "answer", "--finetune-lr", "1e-3")
    assert subset_labels(args) == ["100%", "50%", "100%,3", "7x2"]
    results = run_subset_experiment(args)
    assert results["full_model_reproduced_by_100%"] is True
    for domain in results["domains"].values():
        assert domain["calibration_documents"] == 1 and domain["heldout_documents"] == 8  # all corpus documents
        assert domain["subsets"]["100%,3"]["kept_experts_per_layer"] == [8, 2]
        assert domain["subsets"]["7x2"]["kept_experts_per_layer"] == [6, 6]
        assert [domain["subsets"][s]["kept_slots"] for s in ("100%", "50%", "100%,3", "7x2")] == [18, 8, 12, 14]
        assert len(domain["subsets"]["50%"]["finetune_train_losses"]) == 1  # one prompt, one epoch
        assert math.isfinite(domain["subsets"]["7x2"]["finetuned_loss"])
    assert set(results["mean"]["subsets"]) == {"100%", "50%", "100%,3", "7x2"}
    selection = json.loads((out / "selections" / "law" / "100%,3.json").read_text())
    assert [len(selection[k]) for k in ("0", "1")] == [8, 2]
    table = (out / "results.md").read_text()
    assert "| 100%,3 | 7x2 |" in table and "answer tokens" in table
    assert "1-shot task prompts (at most 8 per domain)" in table


@pytest.mark.parametrize("options, message", [
    (["--finetune-steps", "1", "--finetune-loss", "answer"], "--finetune-loss answer needs --task-prompts"),
    (["--calib-docs", "0"], "--calib-docs must be >= 1, got 0"),
    (["--layer-budgets", "4x3"], "subset 4x3: --keep-per-layer has 3 entries, expected one per layer (2 layers)"),
    (["--fractions", "0.125"], "subset 12.5%: --keep 0.125 leaves 1 of 9 slots"),
])
def test_refuses_what_it_cannot_evaluate_before_writing(tiny_checkpoint, tmp_path, options, message):
    out = tmp_path / "o"
    args = experiment_args(tiny_checkpoint, out, "--calib-docs", "2", "--max-eval-tokens-per-domain", "50",
                           "--fractions", "1", *options)
    with pytest.raises(AnalysisError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_subset_experiment(args)
    assert not out.exists()


def test_mean_over_domains_averages_the_losses_each_subset_has():
    domains = {
        "a": {"full_loss": 1.0, "subsets": {"50%": {"loss": 2.0, "loss_rise": 1.0, "keep": 0.5}}},
        "b": {"full_loss": 3.0, "subsets": {"50%": {"loss": 5.0, "loss_rise": 2.0, "keep": 0.5}}},
    }
    assert mean_over_domains(domains, ["50%"]) == {"full_loss": 2.0, "subsets": {"50%": {"loss": 3.5,
                                                                                         "loss_rise": 1.5}}}
