"""The options every command that runs a Hugging Face EMO checkpoint over a labelled corpus shares
(``emo-analyze-modularity``, ``emo-evaluate-subsets``), so their spelling, defaults and help stay the same."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_inputs(parser: argparse.ArgumentParser) -> None:
    """Checkpoint, corpus, output folder, tokenizer and the corpus's JSON fields."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="Hugging Face EMO checkpoint directory")
    parser.add_argument("--corpus", required=True, type=Path, help="JSON-lines corpus with a text and a domain field")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="SentencePiece .model file or tokenizer directory (default: the checkpoint's tokenizer)",
    )
    parser.add_argument("--text-field", default="text", help="JSON field of the text (default: %(default)s)")
    parser.add_argument(
        "--domain-field", default="domain", help="JSON field of the domain label (default: %(default)s)"
    )


def add_execution(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """How the model runs: document length, batch, dtype, device and its document pools."""
    parser.add_argument(
        "--max-doc-tokens",
        type=int,
        help="cut documents to this many tokens (default: the config's max_position_embeddings)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help="documents per forward pass (default: %(default)s)"
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="model dtype (default: %(default)s)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: %(default)s)"
    )
    parser.add_argument(
        "--inference-pool-size",
        type=int,
        help="route with EMO document pools of this size (0 = plain top-k; default: as the checkpoint)",
    )
