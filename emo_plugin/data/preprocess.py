"""Tokenize JSON-lines corpora into a Megatron indexed dataset (``.bin`` / ``.idx`` + ``.meta.json``).

Every document becomes one sequence of ``encode(text) + [EOD]``: the EOD token after *every*
document is what marks document boundaries for Megatron's masks and for EMO's document ids.

Empty documents (text that is empty or only whitespace) are refused by default, since they
usually mean a broken extraction step; with ``skip_empty=True`` they are skipped and counted
(the count is returned and recorded in the sidecar).

Outputs are written under temporary names and renamed at the end, so an interrupted or failed
run never leaves a half-written dataset under the requested prefix.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
from tqdm import tqdm

from emo_plugin.data.dataset_meta import META_SUFFIX, DatasetMeta, meta_path, token_dtype_for
from emo_plugin.data.records import (
    DEFAULT_EXTRA_FIELDS,
    DEFAULT_TEXT_FIELD,
    check_input_file,
    iter_numbered_lines,
    parse_record,
)
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from emo_plugin.temporary_files import remove_stale_temporaries, temporary_name

LINES_PER_TASK = 64
SKIP_EMPTY_HINT = "pass --skip-empty to skip and count such records"


@dataclass(frozen=True)
class _Task:
    """A batch of raw lines of one file, handed to a worker."""

    source: str
    numbered_lines: list[tuple[int, str]]
    text_field: str
    extra_fields: tuple[str, ...]
    skip_empty: bool
    empty_hint: str


_worker_tokenizer: EmoTokenizer | None = None


_WORKER_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _load_worker_tokenizer(model_path: str) -> None:
    """Worker start: default signal handling, then the tokenizer. A forked worker inherits the parent's Python
    handlers (emo-pretrain turns SIGTERM into "save and stop"), and a worker that only notes the SIGTERM of
    ``Pool.terminate`` never exits: the parent would wait for it forever. The signals arrive blocked (see
    ``_fork_pool``), so one sent before this point waits and then takes the default action: the worker ends."""
    global _worker_tokenizer
    for signum in _WORKER_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
    _worker_tokenizer = EmoTokenizer(model_path)


def _fork_pool(workers: int, model_path: str):
    """A fork Pool whose workers cannot act on SIGTERM/SIGUSR1 with the parent's handler.

    Between a worker's fork and its initializer the parent's handlers are still installed; a ``Pool.terminate``
    (an error in the first results) in that window was only noted and the pool hung. The signals are blocked
    while the pool forks its workers, which inherit the mask; ``_load_worker_tokenizer`` unblocks them once the
    default handlers are back. The pool's helper threads, started here too, keep the mask (a worker the pool
    forks later to replace a dead one inherits it as well); the parent's own mask is restored at once, and a
    signal that reached it meanwhile is delivered then."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
    try:
        context = multiprocessing.get_context("fork")
        return context.Pool(workers, initializer=_load_worker_tokenizer, initargs=(model_path,))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _encode_task(task: _Task) -> tuple[list[numpy.ndarray], int]:
    """Parse, validate and tokenize one batch; returns (documents with EOD appended, empty count)."""
    assert _worker_tokenizer is not None, "worker started without _load_worker_tokenizer"
    documents: list[numpy.ndarray] = []
    empty = 0
    for line_number, line in task.numbered_lines:
        text = parse_record(line, task.source, line_number, task.text_field, task.extra_fields)
        if not text.strip():
            if not task.skip_empty:
                raise DataError(
                    f"{task.source}:{line_number}: empty document (field {task.text_field!r} has no "
                    f"non-whitespace text); remove it or {task.empty_hint}"
                )
            empty += 1
            continue
        documents.append(numpy.array(_worker_tokenizer.encode(text) + [_worker_tokenizer.eod_id]))
    return documents, empty


def _iter_tasks(
    inputs: Sequence[Path], text_field: str, extra_fields: tuple[str, ...], skip_empty: bool, empty_hint: str
) -> Iterator[_Task]:
    for path in inputs:
        numbered = iter_numbered_lines(path)
        while batch := list(itertools.islice(numbered, LINES_PER_TASK)):
            yield _Task(str(path), batch, text_field, extra_fields, skip_empty, empty_hint)


def _count_lines(inputs: Sequence[Path]) -> int:
    total = 0
    for path in inputs:
        with path.open("rb") as stream:
            total += sum(1 for line in stream if line.strip())
    return total


@contextlib.contextmanager
def _encoder(workers: int, tokenizer: EmoTokenizer):
    """``imap`` over a pool of ``workers`` tokenizer processes; one worker encodes in this process (no fork, so
    it also works where children are not allowed, e.g. inside a daemonic process)."""
    if workers == 1:
        global _worker_tokenizer
        _worker_tokenizer = tokenizer
        yield map
        return
    pool = _fork_pool(workers, str(tokenizer.model_path))
    try:
        yield pool.imap
    except BaseException:
        pool.terminate()  # SIGTERM; the workers' handler is the default one (see _load_worker_tokenizer)
        pool.join()
        raise
    pool.close()  # the workers finish and exit on their own
    pool.join()


def _refuse_outputs_over_inputs(prefix: Path, inputs: Sequence[Path]) -> None:
    """The outputs ``prefix.{bin,idx,meta.json}`` must not be an input: writing them would destroy it."""
    sources = {p.resolve(): p for p in inputs}
    for suffix in (".bin", ".idx", META_SUFFIX):
        output = Path(f"{prefix}{suffix}").resolve()
        if output in sources:
            raise DataError(
                f"--output-prefix {prefix} would overwrite the input {sources[output]} with {prefix}{suffix}; "
                "choose another prefix (nothing was written)"
            )


def preprocess_jsonl(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer_model: str | os.PathLike[str],
    output_prefix: str | os.PathLike[str],
    workers: int = 1,
    text_field: str = DEFAULT_TEXT_FIELD,
    extra_fields: Iterable[str] = DEFAULT_EXTRA_FIELDS,
    skip_empty: bool = False,
    progress: bool = True,
    empty_hint: str = SKIP_EMPTY_HINT,
) -> DatasetMeta:
    """Tokenize ``inputs`` (``.jsonl``, in order) into ``<output_prefix>.{bin,idx,meta.json}``.

    Records must be JSON objects with a string ``text_field``; other keys must be in
    ``extra_fields``. Raises ``DataError`` (naming file:line) on any bad input. Returns the
    sidecar that was written. ``empty_hint`` ends the empty-document error with what the caller's user can do.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DataError("no input files given (expected at least one .jsonl file)")
    for path in paths:
        check_input_file(path)
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    tokenizer = EmoTokenizer(tokenizer_model)
    dtype = token_dtype_for(tokenizer.vocab_size)

    prefix = Path(output_prefix)
    _refuse_outputs_over_inputs(prefix, [*paths, Path(tokenizer_model)])
    prefix.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(prefix)  # what a killed run (kill -9) left behind
    remove_stale_temporaries(meta_path(prefix))
    temporary_prefix = temporary_name(prefix, "tmp")
    builder = IndexedDatasetBuilder(f"{temporary_prefix}.bin", dtype=dtype)
    num_documents = num_tokens = skipped = 0
    tasks = _iter_tasks(paths, text_field, tuple(extra_fields), skip_empty, empty_hint)
    try:
        with _encoder(workers, tokenizer) as encode, tqdm(
            total=_count_lines(paths), unit="doc", disable=not progress, desc=prefix.name
        ) as bar:
            for documents, empty in encode(_encode_task, tasks):
                for document in documents:
                    builder.add_document(document, [document.size])
                    num_tokens += document.size
                num_documents += len(documents)
                skipped += empty
                bar.update(len(documents) + empty)
        if num_documents == 0:
            raise DataError(f"{', '.join(map(str, paths))}: no non-empty documents to write")
        builder.finalize(f"{temporary_prefix}.idx")
        meta = DatasetMeta(
            tokenizer_model=str(tokenizer.model_path),
            tokenizer_sha256=tokenizer.sha256,
            vocab_size=tokenizer.vocab_size,
            eod_id=tokenizer.eod_id,
            pad_id=tokenizer.pad_id,
            token_dtype=numpy.dtype(dtype).name,
            num_documents=num_documents,
            num_tokens=num_tokens,
            skipped_empty_documents=skipped,
            text_field=text_field,
            inputs=[str(p) for p in paths],
        )
        meta_path(prefix).unlink(missing_ok=True)  # never leave an old sidecar beside new data
        os.replace(f"{temporary_prefix}.bin", f"{prefix}.bin")
        os.replace(f"{temporary_prefix}.idx", f"{prefix}.idx")
        meta.write(prefix)
        return meta
    finally:
        builder.data_file.close()
        for suffix in (".bin", ".idx"):
            Path(f"{temporary_prefix}{suffix}").unlink(missing_ok=True)
