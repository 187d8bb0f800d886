"""Damaged, mismatched or re-made datasets are refused (or re-indexed) before Megatron reads them."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from tests.data.helpers import write_jsonl
from tests.reliability import record


def _dataset(tmp: Path, name: str, records: list[dict], tokenizer: EmoTokenizer) -> Path:
    source = write_jsonl(tmp / f"{name}.jsonl", records)
    prefix = tmp / name
    preprocess_jsonl([source], tokenizer.model_path, prefix, progress=False)
    return prefix


def _build(prefix: Path, tokenizer: EmoTokenizer, split: str = "100,0,0", **kwargs):
    return build_emo_gpt_datasets(tokenizer, [str(prefix)], 32, [8, None, None], split=split, **kwargs)[0]


def _files(prefix: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in prefix.parent.glob(f"{prefix.name}.*")}


@pytest.fixture
def copy(tmp_path: Path, subset_prefix: str) -> Path:
    """A private copy of the session's indexed subset, free to damage."""
    prefix = tmp_path / "copy"
    for suffix in (".bin", ".idx", ".meta.json"):
        shutil.copy(f"{subset_prefix}{suffix}", f"{prefix}{suffix}")
    return prefix


def _refused(prefix: Path, tokenizer: EmoTokenizer, expected: str) -> str:
    before = _files(prefix)
    with pytest.raises(DataError, match=expected) as info:
        _build(prefix, tokenizer)
    assert _files(prefix) == before  # only read
    return str(info.value)


def test_truncated_bin(copy: Path, bundled_tokenizer: EmoTokenizer) -> None:
    with open(f"{copy}.bin", "r+b") as stream:
        stream.truncate(Path(f"{copy}.bin").stat().st_size - 100)
    message = _refused(copy, bundled_tokenizer, r"copy\.bin: \d+ bytes = .* the \.bin is truncated or belongs to")
    record("training on a truncated .bin", seen=message, kept="the dataset files, unchanged", area="data")


def test_truncated_idx(copy: Path, bundled_tokenizer: EmoTokenizer) -> None:
    with open(f"{copy}.idx", "r+b") as stream:
        stream.truncate(Path(f"{copy}.idx").stat().st_size - 8)
    message = _refused(copy, bundled_tokenizer, r"copy\.idx: \d+ bytes, but its header .* truncated or damaged")
    record("training on a truncated .idx", seen=message, kept="the dataset files, unchanged", area="data")
    Path(f"{copy}.idx").write_bytes(b"MMID")
    message = _refused(copy, bundled_tokenizer, r"copy\.idx: not a Megatron index")
    record("training on a .idx cut inside its header", seen=message, kept="the dataset files, unchanged", area="data")


def test_bin_or_idx_of_another_corpus(tmp_path: Path, copy: Path, corpus_records, bundled_tokenizer) -> None:
    other = _dataset(tmp_path, "other", corpus_records[:50], bundled_tokenizer)
    shutil.copy(f"{other}.bin", f"{copy}.bin")
    message = _refused(copy, bundled_tokenizer, r"copy\.bin: .* belongs to another dataset")
    record(".bin from another corpus (same tokenizer) beside the .idx", seen=message,
           kept="the dataset files, unchanged", area="data")
    shutil.copy(f"{other}.idx", f"{copy}.idx")
    message = _refused(copy, bundled_tokenizer, r"copy\.idx: 50 documents, but .*copy\.meta\.json records 240")
    record(".bin + .idx of another corpus under the old sidecar", seen=message,
           kept="the dataset files, unchanged", area="data")


def test_remade_dataset_does_not_reuse_the_old_index_cache(tmp_path: Path, corpus_records, bundled_tokenizer):
    """Same prefix, same document count, other documents: the new data gets its own index cache."""
    prefix = _dataset(tmp_path, "remade", corpus_records[:60], bundled_tokenizer)
    old = _build(prefix, bundled_tokenizer)
    _dataset(tmp_path, "remade", corpus_records[60:120], bundled_tokenizer)
    new = _build(prefix, bundled_tokenizer)
    fresh = _build(prefix, bundled_tokenizer, path_to_cache=str(tmp_path / "fresh_cache"))
    assert len(new) == len(fresh)
    for index in range(len(fresh)):
        assert new[index]["tokens"].tolist() == fresh[index]["tokens"].tolist()
    assert old[0]["tokens"].tolist() != new[0]["tokens"].tolist()
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cache per content, none overwritten
    record("re-running preprocess_data to the same prefix, then training again",
           seen="trains on the new data: the index cache is named by a content fingerprint "
                "(<prefix dir>/cache/emo-<hash>)",
           kept="the old cache (unused)", area="data")


def test_split_without_documents_is_refused_not_a_hang(tmp_path: Path, corpus_records, bundled_tokenizer) -> None:
    prefix = _dataset(tmp_path, "ten", corpus_records[:10], bundled_tokenizer)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("hung in Megatron's epoch loop"))
    signal.alarm(60)
    try:
        expected = r"ten: data.split='98,2,0' gives the validation split 0 of its 10 documents"
        with pytest.raises(DataError, match=expected):
            build_emo_gpt_datasets(bundled_tokenizer, [str(prefix)], 32, [8, 4, None], split="98,2,0")
    finally:
        signal.alarm(0)
