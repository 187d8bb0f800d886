"""Split a labelled jsonl corpus into training and held-out files, deterministically and per domain.

Every ``--every``-th document of each domain (in file order) goes to the held-out file, so each domain keeps
the same share of held-out documents and the split never changes between runs.

example:
    emo-split-corpus --input examples/data/corpus.jsonl --every 8 \\
        --train runs/modularity/train.jsonl --heldout runs/modularity/heldout.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.data.records import iter_numbered_lines, json_object
from emo_plugin.errors import DataError
from emo_plugin.path_overlap import overlap
from emo_plugin.temporary_files import temporary_name


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-split-corpus")
    parser.add_argument("--input", type=Path, required=True, help="jsonl corpus, one object per line")
    parser.add_argument("--domain-field", default="domain", help="field naming each document's domain")
    parser.add_argument("--every", type=int, default=8, help="hold out every N-th document of each domain")
    parser.add_argument("--train", type=Path, required=True, help="output jsonl for training")
    parser.add_argument("--heldout", type=Path, required=True, help="output jsonl for held-out evaluation")
    return parser


def split_command(args: argparse.Namespace) -> None:
    if args.every < 2:
        raise DataError(f"--every={args.every}: expected an integer ≥ 2")
    for flag, output, other in (("--train", args.train, args.input), ("--heldout", args.heldout, args.input),
                                ("--heldout", args.heldout, args.train)):
        how = overlap(output, other)
        if how:
            raise DataError(f"{flag} {output} {how} {other}; writing it would destroy that file (nothing was written)")
    seen = split(args.input, args.domain_field, args.every, args.train, args.heldout)
    print(json.dumps({"documents_per_domain": dict(seen)}))


def split(source: Path, domain_field: str, every: int, train_path: Path, heldout_path: Path) -> collections.Counter:
    """Write both outputs under temporary names and rename them only when the whole input was read."""
    seen = collections.Counter()
    temporaries = [temporary_name(path.absolute(), "tmp") for path in (train_path, heldout_path)]
    for path in temporaries:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with temporaries[0].open("w") as train, temporaries[1].open("w") as heldout:
            for line_number, line in iter_numbered_lines(source):
                where = f"{source}:{line_number}"
                record = json_object(line, where)
                if domain_field not in record:
                    raise DataError(f"{where}: no field {domain_field!r}")
                seen[record[domain_field]] += 1
                target = heldout if seen[record[domain_field]] % every == 0 else train
                target.write(line if line.endswith("\n") else line + "\n")
        os.replace(temporaries[0], train_path)
        os.replace(temporaries[1], heldout_path)
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)
    return seen


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), split_command, argv)
