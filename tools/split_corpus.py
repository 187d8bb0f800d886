"""Split a labelled jsonl corpus into training and held-out files, deterministically and per domain.

Every ``--every``-th document of each domain (in file order) goes to the held-out file, so each domain keeps
the same share of held-out documents and the split never changes between runs.

    python tools/split_corpus.py --input examples/data/corpus.jsonl --every 8 \\
        --train runs/modularity/train.jsonl --heldout runs/modularity/heldout.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from emo_plugin.data.errors import DataError
from emo_plugin.data.records import iter_numbered_lines, json_object


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="jsonl corpus, one object per line")
    parser.add_argument("--domain-field", default="domain", help="field naming each document's domain")
    parser.add_argument("--every", type=int, default=8, help="hold out every N-th document of each domain")
    parser.add_argument("--train", type=Path, required=True, help="output jsonl for training")
    parser.add_argument("--heldout", type=Path, required=True, help="output jsonl for held-out evaluation")
    args = parser.parse_args(argv)
    if args.every < 2:
        parser.error(f"--every={args.every}: expected an integer ≥ 2")
    seen = collections.Counter()
    args.train.parent.mkdir(parents=True, exist_ok=True)
    args.heldout.parent.mkdir(parents=True, exist_ok=True)
    with args.train.open("w") as train, args.heldout.open("w") as heldout:
        try:
            for line_number, line in iter_numbered_lines(args.input):
                where = f"{args.input}:{line_number}"
                record = json_object(line, where)
                if args.domain_field not in record:
                    raise DataError(f"{where}: no field {args.domain_field!r}")
                domain = record[args.domain_field]
                seen[domain] += 1
                (heldout if seen[domain] % args.every == 0 else train).write(line if line.endswith("\n") else line + "\n")
        except (DataError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(json.dumps({"documents_per_domain": dict(seen)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
