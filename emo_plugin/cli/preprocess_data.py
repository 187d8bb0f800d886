"""Tokenize JSON-lines corpora into a Megatron indexed dataset for EMO training.

Each input line is one JSON object: the document text in --text-field plus, optionally, the
fields id, domain, meta and any named by --allow-field, which are ignored. Every document
is written as its tokens followed by the end-of-document token <|endoftext|>.

Writes, atomically (temporary names, then rename):

  PREFIX.bin        token ids (uint16 for vocabularies up to 65536 pieces, else int32)
  PREFIX.idx        Megatron's index (one sequence per document)
  PREFIX.meta.json  the tokenizer's path, sha256, vocab size and EOD / pad ids; training
                    refuses to read the dataset with any other tokenizer

Refused with an error naming the file and line: missing or empty input files, lines that are not
JSON objects or not UTF-8, a missing or non-string text field, fields outside the allow-list, and empty
documents (unless --skip-empty, which skips and counts them); an output prefix whose files would
overwrite an input. Hidden temporaries of a killed earlier run (kill -9) are removed.

Example (the bundled corpus):

    emo-preprocess-data --input examples/data/corpus.jsonl \\
        --tokenizer-model examples/data/tokenizer.model --output-prefix /tmp/emo_corpus --workers 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.data.records import DEFAULT_EXTRA_FIELDS


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-preprocess-data")
    parser.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE",
                        help=".jsonl files, concatenated in the given order")
    parser.add_argument("--tokenizer-model", required=True, type=Path,
                        help="SentencePiece model from emo-train-tokenizer")
    parser.add_argument("--output-prefix", required=True, type=Path,
                        help="writes PREFIX.bin, PREFIX.idx and PREFIX.meta.json")
    parser.add_argument("--workers", type=int, default=1,
                        help="tokenizer processes (default: %(default)s)")
    parser.add_argument("--text-field", default="text",
                        help="JSON field holding the document text (default: %(default)s)")
    parser.add_argument("--allow-field", action="append", default=list(DEFAULT_EXTRA_FIELDS), metavar="NAME",
                        help="extra JSON field a record may carry (ignored); repeatable "
                             "(always allowed: %s); any other field is an error" % ", ".join(DEFAULT_EXTRA_FIELDS))
    parser.add_argument("--skip-empty", action="store_true",
                        help="skip (and count) records whose text is empty or whitespace instead of failing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def preprocess(args: argparse.Namespace) -> None:
    meta = preprocess_jsonl(
        args.input, args.tokenizer_model, args.output_prefix, workers=args.workers,
        text_field=args.text_field, extra_fields=args.allow_field,
        skip_empty=args.skip_empty, progress=not args.no_progress,
    )
    print(
        f"wrote {meta.num_documents} documents, {meta.num_tokens} tokens ({meta.token_dtype}) to "
        f"{args.output_prefix}.{{bin,idx,meta.json}}; skipped {meta.skipped_empty_documents} empty documents",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), preprocess, argv)
