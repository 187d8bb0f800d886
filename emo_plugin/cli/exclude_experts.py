"""Drop the experts one domain uses most and report every domain's held-out loss before and after.

Per domain, the first --calib-docs documents give each routed expert's mean router probability (the unpruned
model); per layer the --domain's top --drop-per-layer experts are masked (shared experts never are), optionally
sparing experts that another domain uses at least --protect-ratio times as much. The following documents (up to
--max-eval-tokens-per-domain tokens) are held out. With modular experts the --domain's loss rises while the other
domains' barely move. Writes results.json (losses, rises, dropped experts) and results.md (also printed) to --out.

Example:

    emo-exclude-experts --checkpoint out/hf/emo-tiny --corpus examples/data/corpus.jsonl \\
        --tokenizer examples/data/tokenizer.model --out out/exclude/code --domain code --drop-per-layer 2
"""

from __future__ import annotations

import argparse

from emo_plugin.cli import model_on_corpus
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.evaluation.analysis.exclusion_experiment import markdown_report, run_exclusion_experiment
from emo_plugin.path_overlap import check_out_folder


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-exclude-experts")
    model_on_corpus.add_inputs(parser)
    parser.add_argument("--domain", required=True, help="the domain whose most used experts are dropped")
    parser.add_argument("--drop-per-layer", type=int, required=True, help="routed experts dropped in every layer")
    parser.add_argument(
        "--protect-ratio",
        type=float,
        help="spare an expert another domain uses at least this many times as much as --domain (e.g. 0.5)",
    )
    parser.add_argument(
        "--calib-docs", type=int, default=8, help="documents per domain that rank the experts (default: %(default)s)"
    )
    parser.add_argument(
        "--max-eval-tokens-per-domain", type=int, default=50_000, help="held-out token budget per domain"
    )
    model_on_corpus.add_execution(parser, batch_size=4)
    # what split_domains (evaluation/analysis/domain_splits.py) reads: every domain, calibration documents
    parser.set_defaults(domains=None, task_prompts=None)
    return parser


def run(args: argparse.Namespace) -> dict:
    results = run_exclusion_experiment(args)
    print(markdown_report(results), end="")
    return results


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
