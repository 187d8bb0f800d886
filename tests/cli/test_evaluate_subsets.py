"""emo-evaluate-subsets as a command: it prints the report it writes, reads --fractions by the rule of
emo-select-experts --keep, turns bad input into a one-line error and exit 2, and --save-finetuned writes the
evaluated subset (or is refused before any work). The experiment itself is tested in
tests/evaluation/analysis/test_subset_experiment.py."""

import json

import pytest

from emo_plugin.cli import evaluate_subsets
from emo_plugin.evaluation.selection.keep import fraction_argument, keep_argument, kept_slots

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def inputs(tiny_checkpoint, out):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    return ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out)]


def test_prints_the_report_it_writes(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "subsets"
    argv = inputs(tiny_checkpoint, out) + ["--calib-docs", "2", "--max-eval-tokens-per-domain", "50", "--domains",
                                           "law", "--fractions", "1", "0.5"]
    assert evaluate_subsets.main(argv) == 0
    report = (out / "results.md").read_text()
    printed = capsys.readouterr().out
    assert "| **mean** |" in report and "50%" in report
    assert printed.startswith(report) and printed[len(report):].startswith(f"wrote {out} in ")
    assert json.loads((out / "results.json").read_text())["full_model_reproduced_by_100%"] is True


def test_both_tools_read_one_point_zero_as_every_slot():
    evaluate = evaluate_subsets.build_parser()
    assert evaluate.parse_args(["--checkpoint", "c", "--corpus", "x", "--out", "o", "--fractions", "1.0", "0.25"]
                               ).fractions == [1.0, 0.25]
    assert kept_slots(keep_argument("1.0"), 16) == kept_slots(fraction_argument("1.0"), 16) == 16


def test_cli_errors_name_the_file_and_field(tiny_checkpoint, tmp_path, capsys):
    _, _, tokenizer = tiny_checkpoint
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "a b c", "domain": "x"}\n{"text": "d e f"}\n')
    argv = ["--checkpoint", str(tiny_checkpoint[0]), "--corpus", str(corpus), "--tokenizer", str(tokenizer),
            "--out", str(tmp_path / "o")]
    assert evaluate_subsets.main(argv + ["--domain-field", "topic"]) == 2
    assert f"{corpus}:1: record has no 'topic' field" in capsys.readouterr().err


def test_refuses_answer_loss_without_prompts_and_bad_budgets(tiny_checkpoint, tmp_path, capsys):
    argv = inputs(tiny_checkpoint, tmp_path / "o") + ["--calib-docs", "2", "--max-eval-tokens-per-domain", "50",
                                                      "--fractions", "1"]
    assert evaluate_subsets.main(argv + ["--finetune-steps", "1", "--finetune-loss", "answer"]) == 2
    assert "--finetune-loss answer needs --task-prompts" in capsys.readouterr().err
    assert evaluate_subsets.main(argv + ["--layer-budgets", "4x3"]) == 2
    assert "subset 4x3: --keep-per-layer has 3 entries, expected one per layer (2 layers)" in capsys.readouterr().err
    assert evaluate_subsets.main(argv + ["--fractions", "0.125"]) == 2
    assert "subset 12.5%: --keep 0.125 leaves 1 of 9 slots" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_subsets.main(argv + ["--layer-budgets", "4,,4"])
    assert "entry 2 is empty" in capsys.readouterr().err


def test_save_finetuned_writes_the_evaluated_subset_for_reinsertion(tiny_checkpoint, tmp_path, capsys):
    from emo_plugin.evaluation.analysis.checkpoint import load_emo_model, pad_token_id
    from emo_plugin.evaluation.analysis.domain_splits import split_domains
    from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
    from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder

    checkpoint, corpus, tokenizer = tiny_checkpoint
    out, saved = tmp_path / "subsets", tmp_path / "law50-tuned"
    argv = [
        "--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
        "--calib-docs", "2", "--max-eval-tokens-per-domain", "200", "--domains", "law", "--fractions", "0.5",
        "--finetune-steps", "2", "--finetune-lr", "1e-3",
    ]
    assert evaluate_subsets.main([*argv, "--fractions", "0.5", "1", "--save-finetuned", str(saved)]) == 2
    assert "--save-finetuned writes one fine-tuned subset" in capsys.readouterr().err and not saved.exists()
    assert evaluate_subsets.main([*argv, "--save-finetuned", str(saved)]) == 0
    selection = json.loads((out / "selections" / "law" / "50%.json").read_text())
    assert json.loads((saved / "expert_selection.json").read_text()) == selection

    # the saved pruned model is the fine-tuned subset that was evaluated: it has the reported held-out loss
    args = evaluate_subsets.build_parser().parse_args(argv)
    model = load_emo_model(saved)
    assert [model.num_routed_experts(layer) for layer in range(2)] == [len(ids) for ids in selection.values()]
    _, heldout, _ = split_domains(args, load_text_encoder(checkpoint, tokenizer), model)["law"]
    tuned = json.loads((out / "results.json").read_text())["domains"]["law"]["subsets"]["50%"]
    loss = heldout_loss(model, heldout, args.batch_size, pad_token_id(model), "cpu").loss
    assert abs(loss - tuned["finetuned_loss"]) < 1e-5 and abs(loss - tuned["loss"]) > 1e-4
