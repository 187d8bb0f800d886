"""Held-out loss of every domain when the model keeps only a fraction of its experts.

For each domain of a labelled JSON-lines corpus, the first --calib-docs documents select the experts to keep
(emo_plugin.evaluation.selection: greedy layer-wise by mean router probability by default), and the next
documents (up to --max-eval-tokens-per-domain tokens) measure the loss with 100%, 25% and 12.5% of the experts
(--fractions; fractions of all expert slots, shared included, as AI2 count them: 25% of 128 = 31 routed + 1 shared).
--layer-budgets adds per-layer budgets (16,16,8,8 or 100%x2,8x14; see emo-select-experts --keep-per-layer), so a
per-layer budget can be compared with a uniform fraction of the same total (kept_slots in results.json).
With --task-prompts the experts are selected from k-shot task prompts of each domain instead (records with the
--domain-field; --template, --num-shots, --num-examples), and every corpus document of the domain is held out.
Dropped experts are masked before the router softmax, which equals physical pruning; 100% reproduces the full
model exactly. With --finetune-steps N (or --finetune-epochs E) each subset model is also fine-tuned briefly on
the calibration documents or prompts (--finetune-loss answer: on the answer tokens only) and evaluated again.
The paper's fine-tune: --finetune-epochs 1 --finetune-batch-size 32 --finetune-lr 5e-5 --finetune-loss answer.
--save-finetuned DIR (one domain, one fraction) also writes that fine-tuned subset as a pruned Hugging Face
folder, which emo-reinsert-experts puts back into the full model. Writes to --out:

  results.json          losses, perplexities, rises over the full model, kept expert counts, settings, timings
  results.md            the markdown table (also printed)
  selections/<domain>/<subset>.json   the kept routed-expert ids per layer (<subset>: 25% or a layer budget)

Example:

    emo-evaluate-subsets --checkpoint out/hf/emo-tiny --corpus examples/data/corpus.jsonl \\
        --tokenizer examples/data/tokenizer.model --out out/subsets/emo-tiny --calib-docs 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emo_plugin.cli import model_on_corpus, task_prompt_options
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.convert.output_dir import check_output_dir, refuse_overlap
from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.subset_experiment import run_subset_experiment, subset_labels
from emo_plugin.evaluation.analysis.subset_report import markdown_report
from emo_plugin.evaluation.selection import METHODS
from emo_plugin.evaluation.selection.keep import fraction_argument
from emo_plugin.evaluation.selection.layer_budget import layer_budget_argument
from emo_plugin.path_overlap import check_out_folder


def labelled_layer_budget(text: str) -> tuple[str, list[float]]:
    """argparse ``type`` for --layer-budgets: the spelling (the subset's label in the results) and its values."""
    return text.strip(), layer_budget_argument(text)


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-evaluate-subsets")
    model_on_corpus.add_inputs(parser)
    parser.add_argument("--domains", nargs="+", help="evaluate only these domains (default: all)")
    parser.add_argument(
        "--fractions",
        nargs="+",
        type=fraction_argument,
        default=[1.0, 0.25, 0.125],
        help="fractions of the expert slots to keep, shared included: 0.25 or 25%%; 1 = 100%% = every slot "
        "(the rule of select_experts --keep; default: %(default)s)",
    )
    parser.add_argument(
        "--layer-budgets",
        nargs="+",
        type=labelled_layer_budget,
        default=[],
        help="also evaluate per-layer budgets, one --keep value per layer: 16,16,8,8 or 100%%x2,8x14",
    )
    parser.add_argument(
        "--method", choices=tuple(METHODS), default="greedy", help="expert selection (default: %(default)s)"
    )
    parser.add_argument(
        "--calib-docs", type=int, default=8, help="documents per domain that select the experts (default: %(default)s)"
    )
    parser.add_argument(
        "--task-prompts",
        type=Path,
        help="select from k-shot prompts of this JSON-lines task file (records with --domain-field) instead",
    )
    task_prompt_options.add_prompt_format(parser)
    parser.add_argument(
        "--max-eval-tokens-per-domain",
        type=int,
        default=50_000,
        help="held-out token budget per domain (default: %(default)s)",
    )
    model_on_corpus.add_execution(parser, batch_size=4)
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="also fine-tune each subset model this many steps on the calibration documents (default: 0)",
    )
    length.add_argument(
        "--finetune-epochs", type=int, default=0, help="or this many passes over the calibration data (paper: 1)"
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-5, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument(
        "--save-finetuned",
        type=Path,
        help="write the fine-tuned subset here as a pruned Hugging Face folder, in --dtype (needs --finetune-steps, "
        "one --domains and one --fractions value)",
    )
    parser.add_argument(
        "--finetune-batch-size", type=int, help="fine-tune batch (default: --batch-size; paper: 32)"
    )
    parser.add_argument(
        "--finetune-loss",
        choices=("all", "answer"),
        default="all",
        help="targets of the fine-tune loss: every token, or the answers of --task-prompts (paper; default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of random selection and fine-tuning (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> dict:
    results = run_subset_experiment(args)
    print(markdown_report(results, subset_labels(args)), end="")
    print(f"wrote {args.out} in {results['wall_seconds']:.1f} s")
    return results


def check_save_finetuned(args: argparse.Namespace) -> None:
    """--save-finetuned writes ONE subset: refuse an ambiguous request or an unusable folder before any work."""
    if args.save_finetuned is None:
        return
    labels = subset_labels(args)
    fine_tuned = args.finetune_steps or args.finetune_epochs
    if not fine_tuned or len(labels) != 1 or len(args.domains or ()) != 1:
        raise AnalysisError(
            "--save-finetuned writes one fine-tuned subset: it needs --finetune-steps N or --finetune-epochs E, one "
            f"--domains name and one subset, a --fractions value or a --layer-budgets spelling (got "
            f"{args.finetune_steps} steps, {args.finetune_epochs} epochs, domains {args.domains}, subsets {labels})"
        )
    refuse_overlap(args.save_finetuned, [args.checkpoint, args.corpus], flag="--save-finetuned")
    check_output_dir(args.save_finetuned, force=False)


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    check_save_finetuned(args)
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
