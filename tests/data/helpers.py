"""Test-only helpers for the data tests: small JSON-lines files and an independent doc-id reference."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_CORPUS = REPO_ROOT / "examples" / "data" / "corpus.jsonl"
BUNDLED_TOKENIZER = REPO_ROOT / "examples" / "data" / "tokenizer.model"


def read_records(path: Path, limit: int | None = None) -> list[dict]:
    with path.open(encoding="utf-8") as stream:
        return [json.loads(line) for _, line in zip(range(limit or 1 << 62), stream)]


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def reference_doc_ids(tokens: list[int], eod_id: int, first_id: int = 1) -> list[int]:
    """Doc ids by a plain loop: a token belongs to the current document; an EOD closes it."""
    ids, current = [], first_id
    for token in tokens:
        ids.append(current)
        if token == eod_id:
            current += 1
    return ids


def cli_module(name: str) -> ModuleType:
    """The command-line tool ``emo_plugin/cli/<name>.py`` (its ``main(argv)`` and ``build_parser()``)."""
    return importlib.import_module(f"emo_plugin.cli.{name}")
