"""Messages for bad corpus bytes and records point at the right place and suggest options that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emo_plugin.data.records import iter_numbered_lines, json_object
from emo_plugin.errors import DataError
from emo_plugin.training.data import routing_ids_for
from tests.data.helpers import BUNDLED_TOKENIZER
from tests.reliability import record


def test_invalid_utf8_names_line_and_file_offset(tmp_path: Path) -> None:
    source = tmp_path / "latin1.jsonl"
    first = '{"text": "' + "x" * 20000 + '"}\n'  # longer than a decoder's read buffer
    source.write_bytes(first.encode() + b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        list(iter_numbered_lines(source))
    offset = len(first) + len('{"text": "caf')
    assert source.read_bytes()[offset] == 0xE9
    expected = f"latin1.jsonl:2: not valid UTF-8 at byte {offset} of the file (byte 14 of the line: b'\\xe9'"
    assert expected in str(info.value)
    record("preprocess_data on a Latin-1 line after 20 kB of UTF-8", seen=f"error: {info.value}",
           kept="nothing written", area="data")


def test_json_error_reads_once(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        json_object('{"text": "unterminated', "in.jsonl:7")
    assert str(info.value) == "in.jsonl:7: corrupt JSON: Unterminated string starting at (column 10)"


def test_empty_document_hint_fits_the_command(tmp_path: Path) -> None:
    """emo-pretrain has no --skip-empty; its message says how to get the same effect."""
    from emo_plugin.training.data import _tokenise_corpus

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "one"}\n{"text": "  "}\n', encoding="utf-8")
    message = _tokenise_corpus(str(corpus), str(BUNDLED_TOKENIZER), tmp_path / "cache" / "c")
    assert "corpus.jsonl:2: empty document" in message and "--skip-empty and train on it with data.paths" in message
    assert not (tmp_path / "cache" / "c.bin").exists()
    record("emo-pretrain --data.corpus=<corpus with an empty document>", seen=f"emo-pretrain: data error: {message}",
           kept="the corpus; nothing written to data.cache_dir", area="data")


def test_too_many_documents_per_sequence_names_the_bound() -> None:
    doc_ids = torch.arange(1, 9).repeat_interleave(4)[None]  # 8 documents in one 32-token sequence
    with pytest.raises(DataError) as info:
        routing_ids_for(doc_ids, [0], seed=1, max_docs=4)
    assert str(info.value).endswith("more than emo.max_documents_per_sequence=4; "
                                    "set --emo.max_documents_per_sequence=8 or more")
    assert routing_ids_for(doc_ids, [0], seed=1, max_docs=8).shape == (1, 32)
    record("emo-pretrain --emo.max_documents_per_sequence=<below the documents in a sequence>",
           seen=f"emo-pretrain: data error: {info.value}",
           kept="nothing is trained on the batch: the error comes while it is built", area="data")
