"""Both CLIs run end to end on a tiny checkpoint, write their files, and report finite numbers."""

import json
import math

from emo_plugin.cli import analyze_modularity, evaluate_subsets


def finite_numbers(value):
    """Every number inside a JSON value (bools and strings skipped)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in finite_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in finite_numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_analyze_modularity_writes_summary_and_plots(tiny_checkpoint, tmp_path, capsys):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    out = tmp_path / "modularity"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--pool-size",
        "3",
        "--max-tokens-per-domain",
        "400",
        "--batch-size",
        "4",
    ]
    assert analyze_modularity.main(argv) == 0
    for name in (
        "summary.json",
        "summary.txt",
        "document_usage.npz",
        "usage_heatmaps.png",
        "pools.png",
        "document_pca.png",
        "layer_scores.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["domains"]) == ["code", "cooking", "law"]
    assert len(summary["per_layer"]) == 2 and summary["pool_size"] == 3
    assert all(math.isfinite(n) for n in finite_numbers(summary))
    layer = summary["per_layer"][0]
    assert all(abs(sum(usage) - 1) < 1e-5 for usage in layer["usage_by_domain"].values())
    assert 0 <= layer["document_entropy"] <= layer["corpus_entropy"] + 1e-9 <= layer["max_entropy"] + 1e-9
    assert "NMI" in capsys.readouterr().out
    assert_summary_matches_document_usage(summary, out / "document_usage.npz")


def assert_summary_matches_document_usage(summary, usage_file):
    """Per-layer figures recomputed by plain loops from the per-document usage the CLI saved. Every token
    routes to the same number of experts, so a document weighs in its domain by its token count. The usage
    is saved as float32 and the summary rounds to 6 decimals: 1e-5."""
    import numpy as np

    saved = np.load(usage_file)
    names, tokens, domains = [str(n) for n in saved["domain_names"]], saved["num_tokens"], saved["domain_ids"]
    for layer in summary["per_layer"]:
        usage = saved["usage_layer%d" % layer["layer"]].astype(np.float64)
        assert layer["max_entropy"] == math.log(8)  # 8 routed experts
        for k, name in enumerate(names):
            total = sum(usage[d] * tokens[d] for d in range(len(tokens)) if domains[d] == k)
            expected = total / total.sum()
            assert np.allclose(layer["usage_by_domain"][name], expected, rtol=0, atol=1e-5), (layer["layer"], name)
        distinct = sum(int((usage[d] > 0).sum()) for d in range(len(usage))) / len(usage)
        assert abs(layer["distinct_experts_per_document"] - distinct) < 1e-12


def test_evaluate_subsets_reports_losses_and_reproduces_the_full_model(tiny_checkpoint, tmp_path):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    out = tmp_path / "subsets"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--calib-docs",
        "2",
        "--max-eval-tokens-per-domain",
        "200",
        "--fractions",
        "1",
        "0.5",
        "0.34",
        "--finetune-steps",
        "2",
        "--finetune-lr",
        "1e-3",
    ]
    assert evaluate_subsets.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
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


def test_cli_errors_name_the_file_and_field(tiny_checkpoint, tmp_path, capsys):
    checkpoint, _, tokenizer = tiny_checkpoint
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "a b c", "domain": "x"}\n{"text": "d e f"}\n')
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(tmp_path / "o"),
    ]
    assert analyze_modularity.main(argv) == 2
    assert f"{corpus}:2: record has no 'domain' field" in capsys.readouterr().err
    assert evaluate_subsets.main(argv + ["--domain-field", "topic"]) == 2
    assert f"{corpus}:1: record has no 'topic' field" in capsys.readouterr().err


def test_save_finetuned_writes_the_evaluated_subset_for_reinsertion(tiny_checkpoint, tmp_path, capsys):
    from emo_plugin.evaluation.analysis.checkpoint import load_emo_model, pad_token_id
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
    _, heldout, _ = evaluate_subsets.split_domains(args, load_text_encoder(checkpoint, tokenizer), model)["law"]
    tuned = json.loads((out / "results.json").read_text())["domains"]["law"]["subsets"]["50%"]
    loss = heldout_loss(model, heldout, args.batch_size, pad_token_id(model), "cpu").loss
    assert abs(loss - tuned["finetuned_loss"]) < 1e-5 and abs(loss - tuned["loss"]) > 1e-4
