"""The modularity analysis (emo_plugin/evaluation/analysis/modularity_analysis.py) on a tiny checkpoint: it writes
its files, reports finite numbers, and its per-layer figures agree with the per-document usage it saves. The
command around it is tested in tests/cli/test_analyze_modularity.py."""

import json
import math

from emo_plugin.cli import analyze_modularity
from emo_plugin.evaluation.analysis.modularity_analysis import run_modularity_analysis, summary_text


def finite_numbers(value):
    """Every number inside a JSON value (bools and strings skipped)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in finite_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in finite_numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def analysis_args(tiny_checkpoint, out, *options):
    """The settings as emo-analyze-modularity parses them (the analysis's ``args``)."""
    checkpoint, corpus, tokenizer = tiny_checkpoint
    return analyze_modularity.build_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
         *options]
    )


def test_writes_summary_and_plots(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "modularity"
    args = analysis_args(tiny_checkpoint, out, "--pool-size", "3", "--max-tokens-per-domain", "400", "--batch-size",
                         "4")
    summary = run_modularity_analysis(args)
    assert capsys.readouterr().out == ""  # printing is the command's
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
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (out / "summary.txt").read_text() == summary_text(summary)
    assert sorted(summary["domains"]) == ["code", "cooking", "law"]
    assert len(summary["per_layer"]) == 2 and summary["pool_size"] == 3
    assert all(math.isfinite(n) for n in finite_numbers(summary))
    layer = summary["per_layer"][0]
    assert all(abs(sum(usage) - 1) < 1e-5 for usage in layer["usage_by_domain"].values())
    assert 0 <= layer["document_entropy"] <= layer["corpus_entropy"] + 1e-9 <= layer["max_entropy"] + 1e-9
    assert "NMI" in summary_text(summary)
    assert_summary_matches_document_usage(summary, out / "document_usage.npz")


def assert_summary_matches_document_usage(summary, usage_file):
    """Per-layer figures recomputed by plain loops from the per-document usage the analysis saved. Every token
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
