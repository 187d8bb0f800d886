"""Train a SentencePiece tokenizer for EMO training data.

The model is lossless (decode(encode(text)) == text: identity normalisation, whitespace kept,
byte fallback) and has fixed special ids: 0 = <pad>, 1 = <unk>, 2 = <|endoftext|> (the
end-of-document token the preprocessor appends after every document). Writes <prefix>.model.

Example (the bundled tokenizer):

    emo-train-tokenizer --input examples/data/corpus.jsonl \\
        --model-prefix examples/data/tokenizer --vocab-size 4096
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.data.records import DEFAULT_EXTRA_FIELDS
from emo_plugin.data.tokenizer import MODEL_TYPES, EmoTokenizer, train_tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-train-tokenizer")
    parser.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE",
                        help="training files: .jsonl (one JSON object per line, text in --text-field) "
                             "or any other extension (the whole file is one text)")
    parser.add_argument("--model-prefix", required=True,
                        help="output path without extension; writes PREFIX.model")
    parser.add_argument("--vocab-size", type=int, default=4096,
                        help="number of pieces including the 3 special ids and 256 byte pieces (default: %(default)s)")
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="bpe",
                        help="SentencePiece algorithm (default: %(default)s)")
    parser.add_argument("--text-field", default="text",
                        help="JSON field holding the document text in .jsonl inputs (default: %(default)s)")
    parser.add_argument("--allow-field", action="append", default=list(DEFAULT_EXTRA_FIELDS), metavar="NAME",
                        help="extra JSON field a record may carry (ignored); repeatable "
                             "(always allowed: %s); any other field is an error" % ", ".join(DEFAULT_EXTRA_FIELDS))
    parser.add_argument("--character-coverage", type=float, default=0.9999,
                        help="share of characters covered by pieces; the rest use byte fallback (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="SentencePiece trainer threads (default: %(default)s)")
    return parser


def train(args: argparse.Namespace) -> None:
    model_path = train_tokenizer(
        args.input, args.model_prefix, vocab_size=args.vocab_size, model_type=args.model_type,
        text_field=args.text_field, extra_fields=args.allow_field,
        character_coverage=args.character_coverage, num_threads=args.threads,
    )
    print(f"wrote {EmoTokenizer(model_path)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), train, argv)
