"""Reading a labelled corpus: JSON lines with a text field and a domain field.

Why strict: a record silently dropped or filed under the wrong domain changes every modularity number without
any visible sign, so every problem is reported as `<file>:<line>: <what is wrong>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emo_plugin.data.records import json_records
from emo_plugin.errors import AnalysisError, DataError


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
    try:
        for where, record in json_records(path):
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
    except DataError as error:  # the analysis CLIs report AnalysisError
        raise AnalysisError(str(error)) from None
    if not documents:
        raise AnalysisError(f"{path}: corpus has no records")
    return documents


def group_by_domain(documents: list[LabelledDocument]) -> dict[str, list[LabelledDocument]]:
    """Domain → its documents in corpus order; domains sorted by name so every output lists them the same way."""
    grouped: dict[str, list[LabelledDocument]] = {}
    for document in documents:
        grouped.setdefault(document.domain, []).append(document)
    return dict(sorted(grouped.items()))
