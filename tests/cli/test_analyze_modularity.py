"""emo-analyze-modularity as a command: it prints the summary it writes and turns a corpus record without the
domain field into a one-line error naming the file, line and field, and exit 2. The analysis itself is tested in
tests/evaluation/analysis/test_modularity_analysis.py."""

import pytest

from emo_plugin.cli import analyze_modularity

pytestmark = pytest.mark.usefixtures("single_threaded_torch")


def test_prints_the_summary_it_writes(tiny_checkpoint, tmp_path, capsys):
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
        "--no-plots",
    ]
    assert analyze_modularity.main(argv) == 0
    text = (out / "summary.txt").read_text()
    printed = capsys.readouterr().out
    assert "NMI" in text and (out / "summary.json").is_file() and not list(out.glob("*.png"))
    assert printed.startswith(text) and printed[len(text):].startswith(f"wrote {out} in ")


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
