"""Destructive options never touch inputs: an output that is, contains or is inside an input is refused even
with --force, before any work; replacing an output leaves no hidden leftovers; a killed run's temporaries go."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.errors import ConversionError
from tests.data.helpers import BUNDLED_TOKENIZER, cli_module, write_jsonl
from tests.reliability import record


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_run(root: Path) -> Path:
    """A run folder as training leaves it: checkpoints/iter_*/ plus the latest marker (contents are opaque here)."""
    for iteration in (10, 20):
        folder = root / "checkpoints" / f"iter_{iteration:07d}"
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps({"iteration": iteration}))
    (root / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("20")
    return root


def _fake_hf(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "emo"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def _refused(capsys, tool: str, argv: list[str], root: Path, expected: str, case: str, kept: str) -> None:
    before = _tree(root)
    assert cli_module(tool).main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert _tree(root) == before and not [p for p in root.rglob(".*")]  # nothing deleted, written or hidden
    record(case, seen=err, kept=kept, area="outputs")


def test_export_into_the_run_folder_that_holds_the_checkpoints(tmp_path, capsys):
    run = _fake_run(tmp_path / "R")
    _refused(capsys, "export_hf", ["--checkpoint", str(run / "checkpoints"), "--output", str(run), "--force"], run,
             f"--output {run} contains the input {run / 'checkpoints'}",
             "export_hf --checkpoint R/checkpoints --output R --force", "every iter_* folder of R/checkpoints")
    inside = str(run / "checkpoints" / "hf")
    _refused(capsys, "export_hf", ["--checkpoint", str(run / "checkpoints"), "--output", inside, "--force"], run,
             "is inside the input",
             "export_hf --checkpoint R/checkpoints --output R/checkpoints/hf", "the checkpoints")


def test_prune_over_its_source_model(tmp_path, capsys):
    model = _fake_hf(tmp_path / "D" / "model")
    selection = tmp_path / "sel.json"
    selection.write_text('{"0": [0, 1]}')
    _refused(capsys, "prune_experts", ["--model", str(model), "--selection", str(selection), "--output",
                                       str(tmp_path / "D"), "--force"], tmp_path,
             f"--output {tmp_path / 'D'} contains the input {model}",
             "prune_experts --model D/model --output D --force", "the source model folder")


def test_import_over_the_hf_folder(tmp_path, capsys):
    hf = _fake_hf(tmp_path / "X")
    _refused(capsys, "import_hf", ["--hf", str(hf), "--output", str(hf), "--force"], tmp_path,
             f"--output {hf} is the input {hf}", "import_hf --hf X --output X --force", "the HF folder")


def test_select_experts_outputs_over_inputs(tmp_path, capsys):
    model = _fake_hf(tmp_path / "M")
    documents = write_jsonl(tmp_path / "docs.jsonl", [{"text": "x"}])
    _refused(capsys, "select_experts", ["--model", str(model), "--documents", str(documents), "--keep", "2",
                                        "--selection-json", str(documents)], tmp_path,
             f"--selection-json {documents} is the input {documents}",
             "select_experts --selection-json <the --documents file>", "the documents file")
    _refused(capsys, "select_experts", ["--model", str(model), "--documents", str(documents), "--keep", "2",
                                        "--selection-json", str(tmp_path / "s.json"), "--output", str(model / "sub"),
                                        "--force"], tmp_path,
             f"--output {model / 'sub'} is inside the input {model}",
             "select_experts --output <inside the --model folder> --force", "the model folder")


def test_preprocess_output_prefix_over_an_input(tmp_path, capsys):
    source = write_jsonl(tmp_path / "corpus.bin", [{"text": "one"}])
    assert cli_module("preprocess_data").main(["--input", str(source), "--tokenizer-model", str(BUNDLED_TOKENIZER),
                                               "--output-prefix", str(tmp_path / "corpus"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"would overwrite the input {source}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.bin"]
    record("preprocess_data --input corpus.bin --output-prefix corpus", seen=err,
           kept="the input file", area="outputs")


def test_force_over_a_file_leaves_no_hidden_copy(tmp_path):
    target = tmp_path / "out"
    target.write_text("an old file")
    with pytest.raises(ConversionError, match=f"output file {target} exists and is not empty; pass --force"):
        with atomic_output_dir(target):
            pass
    with atomic_output_dir(target, force=True) as folder:
        (folder / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "config.json").is_file()
    record("--output <an existing file> --force", seen="the file is replaced by the new folder",
           kept="no hidden .out.old-* or .out.tmp-* entry is left behind", area="outputs")


def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path):
    """What kill -9 during preprocess_data leaves: hidden temporaries named after a process that is gone."""
    from emo_plugin.data.preprocess import preprocess_jsonl
    from emo_plugin.temporary_files import temporary_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = tmp_path / "data"
    stale = temporary_name(prefix, "tmp").name.rsplit("-", 1)[0] + f"-{dead.pid}"
    (tmp_path / f"{stale}.bin").write_bytes(b"half")
    (tmp_path / f"{stale}.idx").write_bytes(b"half")
    live = temporary_name(prefix, "tmp").name.rsplit("-", 1)[0] + f"-{subprocess.os.getppid()}"
    (tmp_path / f"{live}.bin").write_bytes(b"another live writer")
    source = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "one"}, {"text": "two"}])
    preprocess_jsonl([source], BUNDLED_TOKENIZER, prefix, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"{live}.bin", "corpus.jsonl", "data.bin", "data.idx", "data.meta.json"])
    record("kill -9 during preprocess_data, then running it again",
           seen="nothing; the next run removes the dead run's hidden .PREFIX.tmp-<host>-<pid>.* files",
           kept="temporaries of processes still running; the finished dataset", area="outputs")


def test_split_corpus_never_truncates_its_input(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": f"t{i}", "domain": "a"} for i in range(4)])
    before = corpus.read_bytes()
    assert cli_module("split_corpus").main(["--input", str(corpus), "--train", str(corpus),
                                            "--heldout", str(tmp_path / "h.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"--train {corpus} is {corpus}; writing it would destroy that file" in err
    assert corpus.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["corpus.jsonl"]
    seen = err.strip().splitlines()[-1]
    record("split_corpus --input C --train C", seen=seen, kept="the corpus", area="outputs")
    corpus.write_text(corpus.read_text() + '{"text": "no domain"}\n')
    assert cli_module("split_corpus").main(["--input", str(corpus), "--train", str(tmp_path / "t.jsonl"),
                                           "--heldout", str(tmp_path / "h.jsonl")]) == 2
    assert "corpus.jsonl:5: no field 'domain'" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.jsonl"]  # no half-written outputs


@pytest.mark.parametrize("tool", ["evaluate_subsets", "analyze_modularity"])
def test_analysis_out_folder_checked_before_the_model_loads(tool, tmp_path, capsys):
    model = _fake_hf(tmp_path / "hf")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "x", "domain": "a"}])
    before = _tree(tmp_path)
    for out, expected in [(corpus, f"--out {corpus} is a file; expected a folder"),
                          (model / "results", f"--out {model / 'results'} is inside the input {model}")]:
        assert cli_module(tool).main(["--checkpoint", str(model), "--corpus", str(corpus), "--out", str(out)]) == 2
        assert expected in capsys.readouterr().err
    assert _tree(tmp_path) == before  # nothing written, nothing changed
