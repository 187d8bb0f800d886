"""Preprocessing round trip: read the .bin/.idx back with Megatron's IndexedDataset."""

import json
from pathlib import Path

import numpy
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from emo_plugin.data.dataset_meta import DatasetMeta
from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.data.tokenizer import EmoTokenizer
from tests.data.helpers import cli_module, write_jsonl


def test_every_document_ends_in_eod_and_decodes_to_its_text(
    subset_prefix: str, corpus_records: list[dict], bundled_tokenizer: EmoTokenizer
) -> None:
    indexed = IndexedDataset(subset_prefix)
    assert indexed.index.dtype == numpy.uint16
    assert len(indexed) == len(corpus_records)
    assert indexed.document_indices.tolist() == list(range(len(corpus_records) + 1))
    for i, record in enumerate(corpus_records):
        tokens = indexed[i]
        assert tokens[-1] == bundled_tokenizer.eod_id
        assert (tokens[:-1] != bundled_tokenizer.eod_id).all()
        assert bundled_tokenizer.decode(tokens[:-1]) == record["text"]


def test_sidecar_records_the_tokenizer(
    subset_prefix: str, corpus_records: list[dict], bundled_tokenizer: EmoTokenizer
) -> None:
    meta = DatasetMeta.read(subset_prefix)
    assert meta.tokenizer_sha256 == bundled_tokenizer.sha256
    assert (meta.vocab_size, meta.eod_id, meta.pad_id, meta.token_dtype) == (4096, 2, 0, "uint16")
    assert meta.num_documents == len(corpus_records)
    assert meta.num_tokens == int(IndexedDataset(subset_prefix).sequence_lengths.sum())


def test_output_does_not_depend_on_worker_count(
    tmp_path: Path, corpus_subset: Path, subset_prefix: str, bundled_tokenizer: EmoTokenizer
) -> None:
    preprocess_jsonl([corpus_subset], bundled_tokenizer.model_path, tmp_path / "serial", workers=1, progress=False)
    for suffix in (".bin", ".idx"):
        assert Path(f"{tmp_path / 'serial'}{suffix}").read_bytes() == Path(f"{subset_prefix}{suffix}").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial.bin", "serial.idx", "serial.meta.json"]


def test_skip_empty_skips_and_counts(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "alpha"}, {"text": "  \n"}, {"text": "beta", "id": 7}])
    meta = preprocess_jsonl([source], bundled_tokenizer.model_path, tmp_path / "out", skip_empty=True, progress=False)
    assert (meta.num_documents, meta.skipped_empty_documents) == (2, 1)
    assert json.loads((tmp_path / "out.meta.json").read_text())["skipped_empty_documents"] == 1
    indexed = IndexedDataset(str(tmp_path / "out"))
    assert [bundled_tokenizer.decode(indexed[i]) for i in range(len(indexed))] == ["alpha", "beta"]


def test_custom_text_field_and_allow_list(tmp_path: Path, bundled_tokenizer: EmoTokenizer) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"content": "gamma", "source": "x"}])
    preprocess_jsonl([source], bundled_tokenizer.model_path, tmp_path / "out", text_field="content",
                     extra_fields=["source"], progress=False)
    indexed = IndexedDataset(str(tmp_path / "out"))  # keep it alive: its items are views of its mmap
    assert bundled_tokenizer.decode(indexed[0]) == "gamma"


@pytest.mark.parametrize("tool", ["train_tokenizer", "preprocess_data", "build_corpus"])
def test_cli_help_documents_the_tool(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = cli_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert f"    emo-{tool.replace('_', '-')} --" in capsys.readouterr().out  # a command line to copy
