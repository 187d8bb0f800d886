"""Reading JSON-lines corpora strictly: one JSON object per line with a text field.

Why strict: a silently skipped or mis-keyed record produces a dataset that *looks* fine but is
not what was asked for. Every problem is reported as ``<file>:<line>: <what is wrong>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from emo_plugin.errors import DataError

DEFAULT_TEXT_FIELD = "text"
DEFAULT_EXTRA_FIELDS: tuple[str, ...] = ("id", "domain", "meta")
"""Fields a record may carry besides the text field; they are accepted and ignored."""


def check_input_file(path: Path) -> None:
    """Refuse a missing input file or one without a single non-blank line."""
    if not path.is_file():
        raise DataError(f"{path}: input file does not exist (expected a JSON-lines or text file)")
    with path.open("rb") as stream:
        if not any(line.strip() for line in stream):
            raise DataError(f"{path}: input file is empty (expected at least one non-blank line)")


def json_object(line: str, where: str) -> dict:
    """One JSON-lines record, which must be a JSON object; ``where`` (``file:line``) names it in errors."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: corrupt JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def json_records(path: Path) -> Iterator[tuple[str, dict]]:
    """``(file:line, record)`` for every non-blank line of a UTF-8 JSON-lines file, each a JSON object."""
    for line_number, line in iter_numbered_lines(path):
        where = f"{path}:{line_number}"
        yield where, json_object(line, where)


def parse_record(
    line: str, source: str, line_number: int, text_field: str, extra_fields: Iterable[str]
) -> str:
    """Return the text of one JSON-lines record, or raise ``DataError`` naming ``source:line_number``.

    The record must be a JSON object whose ``text_field`` is a string; any other key must be in
    ``extra_fields``. An empty (or whitespace-only) text is returned as is: the caller decides.
    """
    where = f"{source}:{line_number}"
    record = json_object(line, where)
    if text_field not in record:
        raise DataError(f"{where}: record has no {text_field!r} field (fields: {sorted(record)})")
    allowed = {text_field, *extra_fields}
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise DataError(
            f"{where}: unknown field {unknown[0]!r} (allowed fields: {sorted(allowed)}; "
            "pass --allow-field to accept more)"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{where}: field {text_field!r} must be a string, got {type(text).__name__}")
    return text


def iter_numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line)`` for every non-blank line of a UTF-8 file.

    Lines are decoded one by one, so an invalid byte is reported at its line and its offset in the file (a
    decoder over the whole stream only knows the offset inside its current read buffer).
    """
    offset = 0
    with path.open("rb") as stream:
        for line_number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{line_number}: not valid UTF-8 at byte {offset + error.start} of the file (byte "
                    f"{error.start + 1} of the line: {raw[error.start:error.start + 1]!r}, {error.reason})"
                ) from None
            offset += len(raw)
            if line.strip():
                yield line_number, line


def iter_texts(
    path: Path,
    text_field: str = DEFAULT_TEXT_FIELD,
    extra_fields: Iterable[str] = DEFAULT_EXTRA_FIELDS,
) -> Iterator[str]:
    """Yield the validated text of every record in a ``.jsonl`` file (single process)."""
    check_input_file(path)
    extra = tuple(extra_fields)
    for line_number, line in iter_numbered_lines(path):
        yield parse_record(line, str(path), line_number, text_field, extra)
