"""Build the small multi-domain example corpus bundled at ``examples/data/corpus.jsonl``.

Why: EMO routers choose a per-document expert pool, so a smoke-test corpus needs documents that
clearly differ in kind. Everything here comes from files already installed on a Debian-like
machine (nothing is downloaded), in sorted file order with a fixed seed, so a re-run on the same
machine reproduces the same corpus byte for byte.

Domains (one ``domain`` value each):

* ``python``     - Python standard-library source (``<stdlib>/*.py``)
* ``c_headers``  - C headers (``/usr/include``)
* ``man_en``     - English man pages (``/usr/share/man/man{1,5,8}``), rendered to plain text by groff
* ``man_de``     - German man pages (``/usr/share/man/de``)
* ``man_fr``     - French man pages (``/usr/share/man/fr``)
* ``licenses``   - licence texts (``/usr/share/common-licenses``)
* ``changelogs`` - Debian package changelogs (``/usr/share/doc/*/changelog.Debian.gz``)

Each file is cut at blank lines into documents of a few hundred to a few thousand characters.

Regenerating the bundled corpus, tokenizer and (throw-away) indexed dataset::

    emo-build-corpus --output examples/data/corpus.jsonl
    emo-train-tokenizer --input examples/data/corpus.jsonl \\
        --model-prefix examples/data/tokenizer --vocab-size 4096
    emo-preprocess-data --input examples/data/corpus.jsonl \\
        --tokenizer-model examples/data/tokenizer.model --output-prefix /tmp/emo_corpus --workers 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import DataError
from emo_plugin.temporary_files import atomic_write

MIN_DOCUMENT_CHARS = 300
MAX_DOCUMENT_CHARS = 3000
MAX_DOCUMENTS_PER_FILE = 3


@dataclass(frozen=True)
class Domain:
    """One corpus domain: where its files are, how to read one as plain text, and its size budget."""

    name: str
    files: Callable[[], list[Path]]
    read_text: Callable[[Path], str]
    budget_chars: int


def _sorted_files(root: str, pattern: str) -> list[Path]:
    """Regular, non-symlink files under ``root`` matching ``pattern``, in a stable order."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob(pattern) if p.is_file() and not p.is_symlink())


def _read_plain(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _read_gzip(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as stream:
        return stream.read()


def _render_man_page(path: Path) -> str:
    """Render a gzip'd troff man page to plain UTF-8 text (groff, no overstrike, no hyphenation)."""
    source = _read_gzip(path)
    if source.lstrip().startswith(".so "):  # a redirect to another page, not a page
        return ""
    rendered = subprocess.run(
        ["groff", "-man", "-Tutf8", "-Kutf8", "-P-cbou", "-rLL=2000n", "-rHY=0"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    lines = rendered.strip("\n").splitlines()[1:-1]  # drop the running header and footer
    return "\n".join(re.sub(r"^ {1,7}", "", line.rstrip()) for line in lines)


def _stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def default_domains() -> list[Domain]:
    """The bundled corpus' domains, with budgets that keep the corpus around 2.5 MB."""
    def man_en() -> list[Path]:
        return [p for s in ("man1", "man5", "man8") for p in _sorted_files(f"/usr/share/man/{s}", "*.gz")]

    return [
        Domain("python", lambda: _sorted_files(_stdlib_dir(), "*.py"), _read_plain, 450_000),
        Domain("c_headers", lambda: _sorted_files("/usr/include", "**/*.h"), _read_plain, 400_000),
        Domain("man_en", man_en, _render_man_page, 400_000),
        Domain("man_de", lambda: _sorted_files("/usr/share/man/de", "man*/*.gz"), _render_man_page, 350_000),
        Domain("man_fr", lambda: _sorted_files("/usr/share/man/fr", "man*/*.gz"), _render_man_page, 350_000),
        Domain("licenses", lambda: _sorted_files("/usr/share/common-licenses", "*"), _read_plain, 250_000),
        Domain(
            "changelogs", lambda: _sorted_files("/usr/share/doc", "*/changelog.Debian.gz"), _read_gzip, 300_000
        ),
    ]


def split_into_documents(text: str, rng: random.Random) -> Iterator[str]:
    """Cut ``text`` at blank lines into documents of MIN..MAX_DOCUMENT_CHARS characters.

    Each document's target length is drawn at random so the corpus has a spread of lengths;
    a paragraph longer than the maximum is cut at line boundaries; a short tail is dropped.
    """
    text = re.sub(r"\n{3,}", "\n\n", text.replace("\r\n", "\n")).strip("\n")
    target = rng.randint(MIN_DOCUMENT_CHARS, MAX_DOCUMENT_CHARS)
    current = ""
    for line in text.split("\n"):
        if len(current) + len(line) + 1 > MAX_DOCUMENT_CHARS or (not line and len(current) >= target):
            if len(current.strip()) >= MIN_DOCUMENT_CHARS:
                yield current.strip("\n")
            current, target = "", rng.randint(MIN_DOCUMENT_CHARS, MAX_DOCUMENT_CHARS)
        current += line[:MAX_DOCUMENT_CHARS] + "\n"
    if len(current.strip()) >= MIN_DOCUMENT_CHARS:
        yield current.strip("\n")


def domain_documents(domain: Domain, seed: int) -> list[dict[str, str]]:
    """Documents of one domain: files visited in a seeded shuffle of their sorted order until the budget is met."""
    rng = random.Random(f"{seed}-{domain.name}")
    files = domain.files()
    rng.shuffle(files)
    records: list[dict[str, str]] = []
    used = 0
    for path in files:
        for document in list(split_into_documents(domain.read_text(path), rng))[:MAX_DOCUMENTS_PER_FILE]:
            records.append({"text": document, "domain": domain.name})
            used += len(document)
            if used >= domain.budget_chars:
                return records
    return records


def build_corpus(output: Path, seed: int) -> dict[str, int]:
    """Write the interleaved corpus to ``output`` atomically; return the document count per domain."""
    records: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    for domain in default_domains():
        documents = domain_documents(domain, seed)
        if not documents:
            raise DataError(f"domain {domain.name!r} found no source files on this machine")
        counts[domain.name] = len(documents)
        records.extend(documents)
    random.Random(seed).shuffle(records)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-build-corpus")
    parser.add_argument("--output", type=Path, default=Path("examples/data/corpus.jsonl"),
                        help="where to write the JSON-lines corpus (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1234, help="seed for file order and document lengths")
    return parser


def build(args: argparse.Namespace) -> None:
    counts = build_corpus(args.output, args.seed)
    size = args.output.stat().st_size
    print(f"wrote {sum(counts.values())} documents ({size / 1e6:.2f} MB) to {args.output}: {counts}", file=sys.stderr)



def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), build, argv)
