"""tools/split_corpus.py and tools/compare_subsets.py on small inputs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tool, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)], capture_output=True, text=True)


def test_split_holds_out_every_nth_document_per_domain(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{d}{i}", "domain": d}) + "\n" for i in range(6) for d in "ab"))
    proc = run(
        "split_corpus.py", "--input", corpus, "--every", 3,
        "--train", tmp_path / "t.jsonl", "--heldout", tmp_path / "h.jsonl",
    )
    assert proc.returncode == 0, proc.stderr
    heldout = [json.loads(line)["text"] for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    train = [json.loads(line)["text"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert sorted(heldout) == ["a2", "a5", "b2", "b5"] and len(train) == 8


def test_split_names_the_line_missing_a_domain(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "x", "domain": "a"}\n{"text": "y"}\n')
    proc = run("split_corpus.py", "--input", corpus, "--train", tmp_path / "t", "--heldout", tmp_path / "h")
    assert proc.returncode == 2 and "corpus.jsonl:2" in proc.stderr


def results(full, rise25):
    subsets = {"100%": {"loss_rise": 0.0}, "25%": {"loss_rise": rise25}}
    entry = {"full_loss": full, "subsets": subsets}
    return {"domains": {"code": entry}, "mean": entry}


def test_compare_reports_rises_and_their_ratio(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(results(3.0, 0.1)))
    (tmp_path / "b.json").write_text(json.dumps(results(2.9, 0.4)))
    proc = run(
        "compare_subsets.py", tmp_path / "a.json", tmp_path / "b.json",
        "--names", "EMO", "Std", "--out", tmp_path / "t.md",
    )
    assert proc.returncode == 0, proc.stderr
    mean_row = [line for line in (tmp_path / "t.md").read_text().splitlines() if "**mean**" in line][0]
    assert mean_row.split("|")[1:-1] == [" **mean** ", " 3.000 ", " 2.900 ", " +0.100 ", " +0.400 ", " 0.25 "]
