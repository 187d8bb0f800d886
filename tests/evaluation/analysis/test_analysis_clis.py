"""emo-analyze-modularity runs end to end on a tiny checkpoint, writes its files, and reports finite numbers.
(emo-evaluate-subsets: tests/cli/test_evaluate_subsets.py and test_subset_experiment.py here.)"""

import json
import math

from emo_plugin.cli import analyze_modularity


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
