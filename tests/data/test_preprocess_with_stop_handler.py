"""Tokenising inside emo-pretrain, whose SIGTERM handler only notes a stop request: the worker pool still ends.

Forked workers inherit Python signal handlers; a worker that merely notes the pool's SIGTERM never exits and
the parent waits for it forever (seen as a hung first-use tokenisation of data.corpus).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from emo_plugin.data import preprocess
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


def test_a_terminate_before_the_worker_initializer_still_ends_the_worker(tmp_path: Path, stop_noting_handler) -> None:
    """The race behind the hang: ``Pool.terminate``'s SIGTERM reaching a worker after its fork, before its initializer
    restored the default handler. Here the first worker signals itself at that point; it must die of it."""
    marker = tmp_path / "signalled-worker"
    real_initializer = preprocess._load_worker_tokenizer

    def signal_self_then_initialize(model_path: str) -> None:
        with contextlib.suppress(FileExistsError), marker.open("x") as out:
            out.write(str(os.getpid()))
            out.flush()
            os.kill(os.getpid(), signal.SIGTERM)  # as Pool.terminate would, in the window
        real_initializer(model_path)

    parent_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    original = preprocess._load_worker_tokenizer
    preprocess._load_worker_tokenizer = signal_self_then_initialize
    try:
        pool = preprocess._fork_pool(2, str(BUNDLED_TOKENIZER))
    finally:
        preprocess._load_worker_tokenizer = original
    try:
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == parent_mask  # the parent's mask is back
        deadline = time.monotonic() + 30
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        pid = int(marker.read_text())
        while pid in {child.pid for child in multiprocessing.active_children()}:
            assert time.monotonic() < deadline, "a worker signalled before its initializer lived on"
            time.sleep(0.05)
    finally:
        pool.terminate()  # with the bug, a surviving worker makes this hang (the fixture's alarm reports it)
        pool.join()
    assert stop_noting_handler == []
