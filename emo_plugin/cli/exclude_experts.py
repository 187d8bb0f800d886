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
import json
from pathlib import Path

import torch

from emo_plugin.cli import model_on_corpus
from emo_plugin.cli.evaluate_subsets import split_domains
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.capability_exclusion import experts_to_drop, mean_router_probabilities
from emo_plugin.evaluation.analysis.checkpoint import load_emo_model, pad_token_id, set_inference_pool_size
from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder
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
    parser.set_defaults(domains=None, task_prompts=None)  # split_domains: every domain, calibration documents
    return parser


def markdown(results: dict) -> str:
    lines = [
        f"# Dropping the experts `{results['domain']}` uses most: `{results['settings']['checkpoint']}`",
        "",
        f"{results['settings']['drop_per_layer']} routed experts dropped per layer. Cells: held-out loss in nats.",
        "",
        "| domain | full model | without the experts | rise |",
        "|---|---|---|---|",
    ]
    for name, entry in results["domains"].items():
        marker = " (target)" if name == results["domain"] else ""
        lines.append(f"| {name}{marker} | {entry['full_loss']:.4f} | {entry['excluded_loss']:.4f} | "
                     f"{entry['loss_rise']:+.4f} |")
    return "\n".join(lines) + "\n"


def check_drop(model, drop: int) -> None:
    """Every layer must keep at least the routed experts a token uses."""
    for layer in range(model.config.num_hidden_layers):
        left, needed = model.num_routed_experts(layer) - drop, model.num_routed_experts_per_token(layer)
        if left < needed:
            raise AnalysisError(f"--drop-per-layer {drop} leaves layer {layer} {left} routed experts, fewer than "
                                f"the {needed} each token needs")


def run(args: argparse.Namespace) -> dict:
    if args.calib_docs < 1 or args.drop_per_layer < 1:
        raise AnalysisError(f"--calib-docs and --drop-per-layer must be >= 1, got {args.calib_docs} and "
                            f"{args.drop_per_layer}")
    model = load_emo_model(args.checkpoint, args.dtype, args.device)
    if args.inference_pool_size is not None:
        set_inference_pool_size(model, args.inference_pool_size)
    check_drop(model, args.drop_per_layer)
    splits = split_domains(args, load_text_encoder(args.checkpoint, args.tokenizer), model)
    pad = pad_token_id(model)
    probabilities = {
        name: mean_router_probabilities(model, calibration, args.batch_size, pad, args.device)
        for name, (calibration, _, _) in splits.items()
    }
    dropped = experts_to_drop(probabilities, args.domain, args.drop_per_layer, args.protect_ratio)
    mask = {}
    for layer, ids in dropped.items():
        mask[layer] = torch.ones(model.num_routed_experts(layer), dtype=torch.bool)
        mask[layer][ids] = False
    domains = {}
    for name, (_, heldout, _) in splits.items():
        model.set_expert_mask(None)
        full = heldout_loss(model, heldout, args.batch_size, pad, args.device)
        model.set_expert_mask(mask)
        excluded = heldout_loss(model, heldout, args.batch_size, pad, args.device)
        domains[name] = {"full_loss": full.loss, "excluded_loss": excluded.loss, "loss_rise": excluded.loss - full.loss,
                         "heldout_predicted_tokens": full.num_predicted_tokens}
    model.set_expert_mask(None)
    results = {
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "domain": args.domain,
        "dropped_experts": {str(layer): ids for layer, ids in dropped.items()},
        "domains": domains,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = markdown(results)
    (args.out / "results.md").write_text(report)
    print(report, end="")
    return results


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
