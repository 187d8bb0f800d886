"""Measure how modular an EMO checkpoint's routing is on a labelled corpus.

Reads a Hugging Face EMO checkpoint and a JSON-lines corpus whose records carry a text and a domain label,
runs the model over up to --max-tokens-per-domain tokens of every domain (one document per row) and records,
per layer, the router softmax and the chosen experts of every token. Writes to --out:

  summary.json          every number, per layer, mean over layers and all layers together
  summary.txt           the readable table (also printed)
  document_usage.npz    per-document expert-usage vectors [documents, layers, experts] and domain labels
  *.png                 usage heatmaps, pool distributions, document PCA, per-layer scores

Example:

    emo-analyze-modularity --checkpoint out/hf/emo-tiny --corpus examples/data/corpus.jsonl \\
        --tokenizer examples/data/tokenizer.model --out out/modularity/emo-tiny
"""

from __future__ import annotations

import argparse

from emo_plugin.cli import model_on_corpus
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.evaluation.analysis.modularity_analysis import (
    DEFAULT_POOL_SIZE,
    run_modularity_analysis,
    summary_text,
)
from emo_plugin.path_overlap import check_out_folder


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-analyze-modularity")
    model_on_corpus.add_inputs(parser)
    parser.add_argument(
        "--max-tokens-per-domain",
        type=int,
        default=100_000,
        help="token budget of each domain, eos included (default: %(default)s)",
    )
    model_on_corpus.add_execution(parser, batch_size=8)
    parser.add_argument(
        "--pool-size",
        type=int,
        help="P of the top-P document pools compared by Jaccard "
        f"(default: the config's emo_inference_pool_size, else {DEFAULT_POOL_SIZE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    return parser


def run(args: argparse.Namespace) -> dict:
    summary = run_modularity_analysis(args)
    print(summary_text(summary), end="")
    print(f"wrote {args.out} in {summary['wall_seconds']['total']:.1f} s")
    return summary


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
