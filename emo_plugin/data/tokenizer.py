"""SentencePiece tokenizer training and the ``EmoTokenizer`` wrapper used by the data pipeline.

Special ids (fixed for every tokenizer trained here):

* ``0`` ``<pad>``          - padding. Megatron's GPTDataset pads short samples with ``tokenizer.pad``
  and then rewrites pad tokens to id 0, so pad = 0 keeps both views identical.
* ``1`` ``<unk>``          - never produced in practice: ``byte_fallback`` spells unknown characters as bytes.
* ``2`` ``<|endoftext|>``  - the end-of-document (EOD) token, SentencePiece's *eos* piece.

Why EOD is the eos *control* symbol and not a user-defined symbol: SentencePiece never produces a
control symbol when encoding text, so a document that literally contains ``<|endoftext|>`` cannot
forge a document boundary. Every EOD in a dataset is one the preprocessor appended, which is what
lets ``EmoGPTDataset`` check its document ids against EOD positions.

Training keeps text lossless: identity normalisation, whitespace kept as is (code indentation),
``\\n`` and ``\\t`` as pieces, byte fallback for anything else, so ``decode(encode(t)) == t``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece

from emo_plugin.data.records import DEFAULT_EXTRA_FIELDS, DEFAULT_TEXT_FIELD, check_input_file, iter_texts
from emo_plugin.errors import DataError
from emo_plugin.temporary_files import atomic_write

PAD_ID, UNK_ID, EOD_ID = 0, 1, 2
EOD_PIECE = "<|endoftext|>"
MODEL_TYPES = ("bpe", "unigram")


def _iter_training_texts(
    inputs: Sequence[Path], text_field: str, extra_fields: Iterable[str]
) -> Iterator[str]:
    """Texts from ``.jsonl`` files (one record per line) and plain text files (one text per file)."""
    for path in inputs:
        if path.suffix == ".jsonl":
            yield from (text for text in iter_texts(path, text_field, extra_fields) if text.strip())
        else:
            check_input_file(path)
            yield path.read_text(encoding="utf-8")


def train_tokenizer(
    inputs: Sequence[str | os.PathLike[str]],
    model_prefix: str | os.PathLike[str],
    vocab_size: int = 4096,
    model_type: str = "bpe",
    text_field: str = DEFAULT_TEXT_FIELD,
    extra_fields: Iterable[str] = DEFAULT_EXTRA_FIELDS,
    character_coverage: float = 0.9999,
    num_threads: int = 2,
) -> Path:
    """Train a SentencePiece model on ``inputs`` and write ``<model_prefix>.model`` atomically.

    ``inputs`` are ``.jsonl`` files (the ``text_field`` of every record; other fields must be in
    ``extra_fields``) or plain text files (the whole file is one text). Returns the model path.
    """
    if model_type not in MODEL_TYPES:
        raise DataError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size < 260:
        raise DataError(f"vocab_size must be >= 260 (3 special ids + 256 byte pieces + 1), got {vocab_size}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DataError("no input files given (expected at least one .jsonl or text file)")
    for path in paths:
        check_input_file(path)

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=_iter_training_texts(paths, text_field, extra_fields),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            user_defined_symbols=["\n", "\t"],
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            eos_id=EOD_ID,
            eos_piece=EOD_PIECE,
            bos_id=-1,
            max_sentence_length=1 << 16,
            character_coverage=character_coverage,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as error:  # e.g. "Vocabulary size is too high" for a tiny corpus
        raise DataError(f"SentencePiece training on {[str(p) for p in paths]} failed: {error}") from None

    model_path = Path(f"{model_prefix}.model")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(model_path, model.getvalue())
    return model_path


class EmoTokenizer:
    """A SentencePiece model with the special ids above; also the tokenizer Megatron's GPTDataset needs.

    GPTDatasetConfig reads ``vocab_size`` (token dtype), ``eod`` (masks / position resets),
    ``pad`` (padding; must differ from ``eod``) and ``unique_identifiers`` (part of the hash that
    names cached sample indices, so it holds the model's content hash, not its path).
    """

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise DataError(
                f"{self.model_path}: tokenizer model does not exist (train one with tools/train_tokenizer.py)"
            )
        model_bytes = self.model_path.read_bytes()
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        try:
            self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
        except RuntimeError:
            raise DataError(
                f"{self.model_path}: not a sentencepiece model (its bytes do not parse as one); "
                "pass the .model file written by tools/train_tokenizer.py"
            ) from None
        self.vocab_size: int = self._processor.get_piece_size()
        self.eod_id: int = self._processor.eos_id()
        self.pad_id: int = self._processor.pad_id()
        if self.eod_id < 0 or self.pad_id < 0 or self.eod_id == self.pad_id:
            raise DataError(
                f"{self.model_path}: tokenizer needs distinct eos (EOD) and pad ids, got eos={self.eod_id} "
                f"pad={self.pad_id}; train it with emo_plugin.data.tokenizer.train_tokenizer"
            )
        self.unique_identifiers: dict[str, Any] = {"class": type(self).__name__, "sha256": self.sha256}

    @property
    def eod(self) -> int:
        """Megatron's name for the end-of-document id."""
        return self.eod_id

    @property
    def pad(self) -> int:
        """Megatron's name for the padding id."""
        return self.pad_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no EOD appended; the preprocessor adds it)."""
        return self._processor.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special ids (pad, EOD) decode to nothing."""
        return self._processor.decode([int(i) for i in ids])

    def __reduce__(self) -> tuple[type, tuple[Path]]:
        """Pickle by path (for spawned DataLoader workers); the processor itself is not picklable."""
        return (type(self), (self.model_path,))

    def __repr__(self) -> str:
        return (
            f"EmoTokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size}, "
            f"eod={self.eod_id}, pad={self.pad_id})"
        )
