"""Every refused input fails with a message that names the file, line or field and what was expected."""

import re
from pathlib import Path

import pytest

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.data.tokenizer import EmoTokenizer, train_tokenizer
from emo_plugin.errors import DataError
from tests.data.helpers import cli_module, write_jsonl


def _preprocess(source: Path, tokenizer: EmoTokenizer, **kwargs) -> None:
    preprocess_jsonl([source], tokenizer.model_path, source.with_suffix(""), progress=False, **kwargs)


def _assert_no_outputs(directory: Path, source: Path) -> None:
    assert [p.name for p in directory.iterdir()] == [source.name], "a failed run must leave nothing behind"


def test_missing_input(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    with pytest.raises(DataError, match=r"missing\.jsonl: input file does not exist"):
        _preprocess(tmp_path / "missing.jsonl", bundled_tokenizer)


def test_empty_input(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl: input file is empty"):
        _preprocess(source, bundled_tokenizer)
    with pytest.raises(DataError, match="input file is empty"):
        train_tokenizer([source], tmp_path / "tok")


def test_corrupt_json_line_names_file_and_line(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "ok"}\n\n{"text": "broken\n{"text": "fine"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{source}:3: corrupt JSON"):
        _preprocess(source, bundled_tokenizer, workers=2)
    _assert_no_outputs(tmp_path, source)


def test_unknown_field_names_the_field_and_line(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "a", "domain": "x"}, {"text": "b", "lang": "en"}])
    expected = rf"{source}:2: unknown field 'lang' \(allowed fields: \['domain', 'id', 'meta', 'text'\]"
    with pytest.raises(DataError, match=expected):
        _preprocess(source, bundled_tokenizer)
    _assert_no_outputs(tmp_path, source)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["text"]', "expected a JSON object, got list"),
        ('{"body": "x"}', "record has no 'text' field"),
        ('{"text": 3}', "field 'text' must be a string, got int"),
        ('{"text": " \\n "}', "empty document .* pass --skip-empty"),
    ],
)
def test_malformed_records(tmp_path: Path, bundled_tokenizer: EmoTokenizer, line: str, message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{source}:2: {message}"):
        _preprocess(source, bundled_tokenizer)
    _assert_no_outputs(tmp_path, source)


def test_failed_run_keeps_the_previous_dataset(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    good = write_jsonl(tmp_path / "data.jsonl", [{"text": "first version"}])
    _preprocess(good, bundled_tokenizer)
    before = (tmp_path / "data.bin").read_bytes()
    good.write_text('{"text": "second"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match="data.jsonl:2: corrupt JSON"):
        _preprocess(good, bundled_tokenizer)
    assert (tmp_path / "data.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "data.idx", "data.jsonl", "data.meta.json"]


def test_tokenizer_mismatch_is_refused(tmp_path: Path, subset_prefix: str, corpus_subset: Path) -> None:
    other = EmoTokenizer(train_tokenizer([corpus_subset], tmp_path / "other", vocab_size=512))
    expected = r"subset\.meta\.json: tokenizer mismatch: .*tokenizer\.model .*4096.*other\.model .*vocab_size 512"
    with pytest.raises(DataError, match=expected):
        build_emo_gpt_datasets(
            other, [subset_prefix], 32, [10, None, None], split="100,0,0", path_to_cache=str(tmp_path)
        )


def test_missing_sidecar_is_refused(tmp_path: Path, subset_prefix: str, bundled_tokenizer: EmoTokenizer) -> None:
    for suffix in (".bin", ".idx"):
        (tmp_path / f"bare{suffix}").write_bytes(Path(f"{subset_prefix}{suffix}").read_bytes())
    expected = r"bare\.meta\.json: missing tokenizer sidecar .* tools/preprocess_data\.py"
    with pytest.raises(DataError, match=expected):
        build_emo_gpt_datasets(
            bundled_tokenizer, [str(tmp_path / "bare")], 32, [10, None, None], split="100,0,0",
            path_to_cache=str(tmp_path),
        )


def test_cli_reports_errors_without_traceback(tmp_path: Path, bundled_tokenizer: EmoTokenizer, capsys) -> None:
    module = cli_module("preprocess_data")
    assert module.main(["--input", str(tmp_path / "nope.jsonl"), "--tokenizer-model", str(bundled_tokenizer.model_path),
                        "--output-prefix", str(tmp_path / "out"), "--no-progress"]) == 2
    assert re.match(r"^emo-preprocess-data: data error: .*nope\.jsonl: input file does not exist",
                    capsys.readouterr().err)
