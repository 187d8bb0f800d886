"""The capability-exclusion experiment of ``emo-exclude-experts``: mask the experts one domain uses most and
measure every domain's held-out loss before and after.

Per domain (``domain_splits.py``, calibration documents only), the calibration documents give each routed
expert's mean router probability on the unpruned model; ``capability_exclusion.experts_to_drop`` picks the
target domain's experts per layer. The same mask then applies to every domain's held-out documents.
``run_exclusion_experiment`` writes ``results.json`` and ``results.md`` (``markdown_report``) to ``args.out``; the
command prints the report.

``args`` is the parsed command line of ``emo-exclude-experts`` (``emo_plugin/cli/exclude_experts.py``, which
documents every option); its values are recorded under "settings" in the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.capability_exclusion import experts_to_drop, mean_router_probabilities
from emo_plugin.evaluation.analysis.checkpoint import load_emo_model, pad_token_id, set_inference_pool_size
from emo_plugin.evaluation.analysis.domain_splits import split_domains
from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder


def markdown_report(results: dict) -> str:
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


def run_exclusion_experiment(args: argparse.Namespace) -> dict:
    """Drop the --domain's most used experts; write results.json and results.md to ``args.out`` and return the
    results."""
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
    (args.out / "results.md").write_text(markdown_report(results))
    return results
