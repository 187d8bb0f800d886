"""Tokenising inside emo-pretrain, whose SIGTERM handler only notes a stop request: the worker pool still ends.

Forked workers inherit Python signal handlers; a worker that merely notes the pool's SIGTERM never exits and
the parent waits for it forever (seen as a hung first-use tokenisation of data.corpus).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.errors import DataError
from tests.data.helpers import BUNDLED_TOKENIZER, write_jsonl


@pytest.fixture
def stop_noting_handler():
    """What emo-pretrain installs before building datasets: SIGTERM only sets a flag."""
    noted = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum))
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the tokenizer pool did not end (hung)"))
    signal.alarm(120)
    yield noted
    signal.alarm(0)
    signal.signal(signal.SIGTERM, previous)


def test_pool_ends_after_success_and_after_an_error(tmp_path: Path, stop_noting_handler) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": f"document number {i}"} for i in range(300)])
    meta = preprocess_jsonl([good], BUNDLED_TOKENIZER, tmp_path / "good", workers=2, progress=False)
    assert meta.num_documents == 300
    # The error comes with the first results while many tasks are still queued: the pool is terminated with
    # its workers busy or waiting for the queue.
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": 7}] + [{"text": f"d{i}"} for i in range(20000)])
    with pytest.raises(DataError, match="bad.jsonl:1: field 'text' must be a string"):
        preprocess_jsonl([bad], BUNDLED_TOKENIZER, tmp_path / "bad", workers=2, progress=False)
    assert stop_noting_handler == []  # the parent itself was never signalled
