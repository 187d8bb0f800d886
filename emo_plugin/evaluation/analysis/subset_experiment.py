"""The subset experiment of ``emo-evaluate-subsets``: every domain's held-out loss when the model keeps only some
of its experts, chosen on that domain's calibration data, optionally after a short fine-tune of each subset.

Per domain (``domain_splits.py``): the full model's held-out loss, then for every subset (the fractions, then the
per-layer budgets) the kept experts (``subset_selection.py``, written to ``selections/<domain>/<subset>.json``),
the masked model's loss and, with fine-tuning, the loss after ``subset_finetune.py``. Dropped experts are masked
before the router softmax, which equals physical pruning, so the 100% subset reproduces the full model exactly.
``run_subset_experiment`` writes ``results.json`` and ``results.md`` (``subset_report.py``) to ``args.out``; the
command prints the report.

``args`` is the parsed command line of ``emo-evaluate-subsets`` (``emo_plugin/cli/evaluate_subsets.py``, which
documents every option); its values are recorded under "settings" in the results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from emo_plugin.errors import AnalysisError, ConversionError
from emo_plugin.evaluation.analysis.checkpoint import load_emo_model, pad_token_id, set_inference_pool_size
from emo_plugin.evaluation.analysis.domain_splits import split_domains
from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
from emo_plugin.evaluation.analysis.subset_finetune import (
    ModelWeights,
    finetune_subset,
    restoring_weights,
    steps_for_epochs,
)
from emo_plugin.evaluation.analysis.subset_report import fraction_label, markdown_report
from emo_plugin.evaluation.analysis.subset_selection import select_kept_experts
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder
from emo_plugin.evaluation.selection import kept_expert_masks, write_pruned_checkpoint
from emo_plugin.evaluation.selection.select import routed_counts


def subsets(args) -> list[tuple[str, float | list[float]]]:
    """(label, keep) of every subset to evaluate: the fractions, then the per-layer budgets."""
    return [(fraction_label(f), f) for f in args.fractions] + list(args.layer_budgets)


def subset_labels(args) -> list[str]:
    """The labels of the subsets, in the order of the results (``25%``, or a layer budget as spelled)."""
    return [label for label, _ in subsets(args)]


def check_subsets(model, args) -> None:
    """Refuse a fraction or layer budget the model cannot keep before any selection runs."""
    for label, keep in subsets(args):
        try:
            routed_counts(keep, model)
        except ConversionError as error:
            raise AnalysisError(f"subset {label}: {error}") from None


def evaluate_domain(model, args, calibration, heldout, answer_starts, selections_dir: Path) -> dict:
    pad = pad_token_id(model)
    model.set_expert_mask(None)
    full = heldout_loss(model, heldout, args.batch_size, pad, args.device)
    result = {
        "calibration_documents": len(calibration),
        "heldout_documents": len(heldout),
        "heldout_predicted_tokens": full.num_predicted_tokens,
        "full_loss": full.loss,
        "full_perplexity": full.perplexity,
        "subsets": {},
    }
    selections_dir.mkdir(parents=True, exist_ok=True)
    finetune_batch = args.finetune_batch_size or args.batch_size
    finetune_steps = args.finetune_steps or steps_for_epochs(len(calibration), finetune_batch, args.finetune_epochs)
    for label, keep in subsets(args):
        kept = select_kept_experts(model, calibration, keep, args.method, args.seed)
        (selections_dir / f"{label}.json").write_text(
            json.dumps({str(layer): ids for layer, ids in kept.items()}) + "\n"
        )
        model.set_expert_mask(kept_expert_masks(model, kept))
        subset = heldout_loss(model, heldout, args.batch_size, pad, args.device)
        entry = {
            "keep": keep,
            "kept_experts_per_layer": [len(ids) for ids in kept.values()],
            "kept_slots": sum(len(ids) + model.config.expert_slots(layer)[1] for layer, ids in kept.items()),
            "loss": subset.loss,
            "perplexity": subset.perplexity,
            "loss_rise": subset.loss - full.loss,
        }
        if finetune_steps:
            with restoring_weights(model):
                entry["finetune_train_losses"] = finetune_subset(
                    model,
                    calibration,
                    finetune_steps,
                    args.finetune_lr,
                    finetune_batch,
                    pad,
                    args.device,
                    args.seed,
                    answer_starts if args.finetune_loss == "answer" else None,
                )
                tuned = heldout_loss(model, heldout, args.batch_size, pad, args.device)
                if args.save_finetuned:
                    write_pruned_checkpoint(args.checkpoint, args.save_finetuned, kept, weights=ModelWeights(model))
            entry |= {
                "finetuned_loss": tuned.loss,
                "finetuned_perplexity": tuned.perplexity,
                "finetuned_loss_rise": tuned.loss - full.loss,
            }
        model.set_expert_mask(None)
        result["subsets"][label] = entry
    return result


def mean_over_domains(domains: dict, labels: list[str]) -> dict:
    mean = lambda values: float(np.mean(values))  # noqa: E731
    summary = {"full_loss": mean([d["full_loss"] for d in domains.values()]), "subsets": {}}
    for label in labels:
        entries = [d["subsets"][label] for d in domains.values()]
        summary["subsets"][label] = {
            key: mean([e[key] for e in entries])
            for key in ("loss", "loss_rise", "finetuned_loss", "finetuned_loss_rise")
            if key in entries[0]
        }
    return summary


def run_subset_experiment(args: argparse.Namespace) -> dict:
    """Evaluate every subset on every domain; write results.json, results.md and the selections to ``args.out``
    and return the results."""
    started = time.perf_counter()
    if args.calib_docs < 1:
        raise AnalysisError(f"--calib-docs must be >= 1, got {args.calib_docs}")
    if args.finetune_loss == "answer" and not args.task_prompts:
        raise AnalysisError("--finetune-loss answer needs --task-prompts (documents have no answer tokens)")
    model = load_emo_model(args.checkpoint, args.dtype, args.device)
    if args.inference_pool_size is not None:
        set_inference_pool_size(model, args.inference_pool_size)
    splits = split_domains(args, load_text_encoder(args.checkpoint, args.tokenizer), model)
    check_subsets(model, args)
    domains = {
        name: evaluate_domain(model, args, calibration, heldout, answer_starts, args.out / "selections" / name)
        for name, (calibration, heldout, answer_starts) in splits.items()
    }
    labels = subset_labels(args)
    results = {
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        | {"inference_pool_size": model.config.emo_inference_pool_size},
        "domains": domains,
        "mean": mean_over_domains(domains, labels),
    }
    if 1.0 in args.fractions:
        results["full_model_reproduced_by_100%"] = all(
            d["subsets"]["100%"]["loss"] == d["full_loss"] for d in domains.values()
        )
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown_report(results, labels))
    return results
