"""Reading a labelled corpus: JSON lines with a text field and a domain field.

Why strict: a record silently dropped or filed under the wrong domain changes every modularity number without
any visible sign, so every problem is reported as `<file>:<line>: <what is wrong>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emo_plugin.analysis.errors import AnalysisError


@dataclass(frozen=True)
class LabelledDocument:
    text: str
    domain: str


def read_labelled_corpus(
    path: str | Path, text_field: str = "text", domain_field: str = "domain"
) -> list[LabelledDocument]:
    """All records of a `.jsonl` file, in file order; blank lines are skipped, anything malformed is an error."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(
            f"{path}: corpus file does not exist (expected JSON lines with {text_field!r} and {domain_field!r})"
        )
    documents = []
    with path.open(encoding="utf-8") as stream:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnalysisError(f"{where}: corrupt JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise AnalysisError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for field in (text_field, domain_field):
                if field not in record:
                    raise AnalysisError(f"{where}: record has no {field!r} field (fields: {sorted(record)})")
            text, domain = record[text_field], record[domain_field]
            if not isinstance(text, str):
                raise AnalysisError(f"{where}: field {text_field!r} must be a string, got {type(text).__name__}")
            if not isinstance(domain, (str, int)) or isinstance(domain, bool):
                raise AnalysisError(
                    f"{where}: field {domain_field!r} must be a string or integer label, got {domain!r}"
                )
            documents.append(LabelledDocument(text=text, domain=str(domain)))
    if not documents:
        raise AnalysisError(f"{path}: corpus has no records")
    return documents


def group_by_domain(documents: list[LabelledDocument]) -> dict[str, list[LabelledDocument]]:
    """Domain → its documents in corpus order; domains sorted by name so every output lists them the same way."""
    grouped: dict[str, list[LabelledDocument]] = {}
    for document in documents:
        grouped.setdefault(document.domain, []).append(document)
    return dict(sorted(grouped.items()))
