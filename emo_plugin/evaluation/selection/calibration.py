"""Calibration documents: a few examples of the target task, one token sequence per document.

Each document is tokenised on its own and ends with the eos token (EMO's document boundary), so scoring sees
the same single-document inputs the model was trained on; no padding is ever needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from emo_plugin.data.records import json_records
from emo_plugin.errors import ConversionError, DataError


def read_documents(path: str | Path, text_field: str = "text", limit: int | None = None) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: calibration file does not exist (expected JSON lines with {text_field!r})")
    texts = []
    try:
        for where, record in json_records(path):
            if text_field not in record:
                raise ConversionError(f"{where}: record has no {text_field!r} field (fields: {sorted(record)})")
            texts.append(str(record[text_field]))
            if limit and len(texts) >= limit:
                break
    except DataError as error:  # the selection CLI reports ConversionError
        raise ConversionError(str(error)) from None
    if not texts:
        raise ConversionError(f"{path}: no documents")
    return texts


def tokenize_documents(tokenizer, texts: list[str], eos_token_id: int, max_tokens: int) -> list[torch.Tensor]:
    """[1, n] id tensors; each document truncated to ``max_tokens - 1`` tokens and closed with eos."""
    docs = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)[: max_tokens - 1] + [eos_token_id]
        docs.append(torch.tensor([ids]))
    return docs
