"""Fixtures for the data tests: the bundled tokenizer, a slice of the bundled corpus, and its indexed dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from emo_plugin.data.tokenizer import EmoTokenizer
from tests.data.helpers import BUNDLED_CORPUS, BUNDLED_TOKENIZER, read_records, write_jsonl

SUBSET_DOCUMENTS = 240


@pytest.fixture(scope="session")
def bundled_tokenizer() -> EmoTokenizer:
    return EmoTokenizer(BUNDLED_TOKENIZER)


@pytest.fixture(scope="session")
def corpus_records() -> list[dict]:
    """The first documents of the bundled corpus (all domains are interleaved, so all appear)."""
    return read_records(BUNDLED_CORPUS, limit=SUBSET_DOCUMENTS)


@pytest.fixture(scope="session")
def corpus_subset(tmp_path_factory: pytest.TempPathFactory, corpus_records: list[dict]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "subset.jsonl", corpus_records)


@pytest.fixture(scope="session")
def subset_prefix(
    tmp_path_factory: pytest.TempPathFactory, corpus_subset: Path, bundled_tokenizer: EmoTokenizer
) -> str:
    """The corpus subset preprocessed with the bundled tokenizer (2 worker processes)."""
    from emo_plugin.data.preprocess import preprocess_jsonl

    prefix = tmp_path_factory.mktemp("indexed") / "subset"
    preprocess_jsonl([corpus_subset], bundled_tokenizer.model_path, prefix, workers=2, progress=False)
    return str(prefix)
