"""Tokenizer training and the EmoTokenizer wrapper, on real text from the bundled corpus."""

import pickle
from pathlib import Path

import pytest

from emo_plugin.data.tokenizer import EOD_ID, EOD_PIECE, PAD_ID, EmoTokenizer, train_tokenizer
from emo_plugin.errors import DataError
from tests.data.helpers import BUNDLED_CORPUS, read_records, write_jsonl


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory, corpus_subset: Path) -> EmoTokenizer:
    """A 600-piece BPE model trained on the corpus subset plus one plain-text file."""
    plain = tmp_path_factory.mktemp("plain") / "notes.txt"
    plain.write_text("Plain text files are one text each.\n\tIndented line.\n", encoding="utf-8")
    model = train_tokenizer([corpus_subset, plain], tmp_path_factory.mktemp("tok") / "small", vocab_size=600)
    return EmoTokenizer(model)


def test_trained_tokenizer_has_the_documented_special_ids(small_tokenizer: EmoTokenizer) -> None:
    assert (small_tokenizer.vocab_size, small_tokenizer.eod_id, small_tokenizer.pad_id) == (600, EOD_ID, PAD_ID)
    assert (small_tokenizer.eod, small_tokenizer.pad) == (EOD_ID, PAD_ID)
    assert small_tokenizer.model_path.name == "small.model"
    assert small_tokenizer.unique_identifiers == {"class": "EmoTokenizer", "sha256": small_tokenizer.sha256}


def test_round_trip_on_real_text(small_tokenizer: EmoTokenizer, corpus_records: list[dict]) -> None:
    for record in corpus_records:
        ids = small_tokenizer.encode(record["text"])
        assert small_tokenizer.eod_id not in ids and small_tokenizer.pad_id not in ids
        assert small_tokenizer.decode(ids) == record["text"]


def test_bundled_tokenizer_round_trips_the_whole_bundled_corpus(bundled_tokenizer: EmoTokenizer) -> None:
    records = read_records(BUNDLED_CORPUS)
    assert len({r["domain"] for r in records}) >= 5
    assert 4096 <= bundled_tokenizer.vocab_size <= 8192
    for record in records:
        assert bundled_tokenizer.decode(bundled_tokenizer.encode(record["text"])) == record["text"]


def test_literal_eod_text_cannot_forge_a_document_boundary(bundled_tokenizer: EmoTokenizer) -> None:
    text = f"one {EOD_PIECE} two"
    ids = bundled_tokenizer.encode(text)
    assert bundled_tokenizer.eod_id not in ids
    assert bundled_tokenizer.decode(ids) == text
    assert bundled_tokenizer.decode(ids + [bundled_tokenizer.eod_id, bundled_tokenizer.pad_id]) == text


def test_unigram_model_round_trips(tmp_path: Path, corpus_records: list[dict]) -> None:
    source = write_jsonl(tmp_path / "few.jsonl", corpus_records[:40])
    tokenizer = EmoTokenizer(train_tokenizer([source], tmp_path / "uni", vocab_size=400, model_type="unigram"))
    assert (tokenizer.vocab_size, tokenizer.eod_id, tokenizer.pad_id) == (400, EOD_ID, PAD_ID)
    for record in corpus_records[40:80]:
        assert tokenizer.decode(tokenizer.encode(record["text"])) == record["text"]


def test_unseen_characters_survive_through_byte_fallback(small_tokenizer: EmoTokenizer) -> None:
    text = "日本語 ✓ emoji 🙂"
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_pickles_by_path(small_tokenizer: EmoTokenizer) -> None:
    copy = pickle.loads(pickle.dumps(small_tokenizer))
    assert copy.sha256 == small_tokenizer.sha256 and copy.encode("def f(x):") == small_tokenizer.encode("def f(x):")


def test_training_refuses_bad_arguments(tmp_path: Path, corpus_subset: Path) -> None:
    with pytest.raises(DataError, match="model_type must be one of"):
        train_tokenizer([corpus_subset], tmp_path / "t", model_type="wordpiece")
    with pytest.raises(DataError, match="does not exist"):
        train_tokenizer([tmp_path / "missing.jsonl"], tmp_path / "t")
    with pytest.raises(DataError, match="vocab_size must be >= 260"):
        train_tokenizer([corpus_subset], tmp_path / "t", vocab_size=100)
    with pytest.raises(DataError, match="SentencePiece training on .* failed: .*Increase vocab_size"):
        train_tokenizer([corpus_subset], tmp_path / "t", vocab_size=300)
    with pytest.raises(DataError, match="does not exist"):
        EmoTokenizer(tmp_path / "missing.model")
