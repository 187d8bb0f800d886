"""The ``<prefix>.meta.json`` sidecar that ties an indexed dataset to the tokenizer that made it.

Why: ``.bin/.idx`` files hold bare token ids. Reading them with another tokenizer (other vocab,
other EOD id) trains on garbage without any error, so the preprocessor records the tokenizer's
content hash, vocab size and special ids, and the dataset refuses a tokenizer that differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy

from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from emo_plugin.temporary_files import atomic_write

META_SUFFIX = ".meta.json"
FORMAT_VERSION = 1


def meta_path(prefix: str | os.PathLike[str]) -> Path:
    """Path of the sidecar for the dataset at ``prefix`` (``prefix.bin`` / ``prefix.idx``)."""
    return Path(f"{prefix}{META_SUFFIX}")


def token_dtype_for(vocab_size: int) -> type[numpy.integer]:
    """The token dtype Megatron expects for a vocab (GPTDatasetConfig: uint16 up to 65536 ids, else int32)."""
    return numpy.uint16 if vocab_size <= numpy.iinfo(numpy.uint16).max + 1 else numpy.int32


@dataclass(frozen=True)
class DatasetMeta:
    """What the preprocessor records about one indexed dataset."""

    tokenizer_model: str
    tokenizer_sha256: str
    vocab_size: int
    eod_id: int
    pad_id: int
    token_dtype: str
    num_documents: int
    num_tokens: int
    skipped_empty_documents: int
    text_field: str
    inputs: list[str]
    format_version: int = FORMAT_VERSION

    def write(self, prefix: str | os.PathLike[str]) -> None:
        """Write the sidecar atomically (temporary name, then rename)."""
        atomic_write(meta_path(prefix), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, prefix: str | os.PathLike[str]) -> "DatasetMeta":
        """Read the sidecar of ``prefix``; a missing or malformed one is a ``DataError``."""
        path = meta_path(prefix)
        if not path.is_file():
            raise DataError(
                f"{path}: missing tokenizer sidecar for dataset {prefix}; datasets must be made by "
                "tools/preprocess_data.py, which records the tokenizer they were tokenized with"
            )
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as error:
            raise DataError(f"{path}: malformed dataset sidecar ({error}); re-run tools/preprocess_data.py") from None

    def check_tokenizer(self, tokenizer: EmoTokenizer, prefix: str | os.PathLike[str]) -> None:
        """Refuse ``tokenizer`` unless it is the very model this dataset was tokenized with."""
        if tokenizer.sha256 == self.tokenizer_sha256:
            return
        raise DataError(
            f"{meta_path(prefix)}: tokenizer mismatch: dataset {prefix} was tokenized with "
            f"{self.tokenizer_model} (sha256 {self.tokenizer_sha256[:12]}, vocab_size {self.vocab_size}, "
            f"eod_id {self.eod_id}) but the configured tokenizer is {tokenizer.model_path} (sha256 "
            f"{tokenizer.sha256[:12]}, vocab_size {tokenizer.vocab_size}, eod_id {tokenizer.eod_id}); "
            "use the original tokenizer or re-run tools/preprocess_data.py with this one"
        )
