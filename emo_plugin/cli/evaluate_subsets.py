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
import json
import time
from pathlib import Path

import numpy as np

from emo_plugin.cli import model_on_corpus, task_prompt_options
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.convert.output_dir import check_output_dir, refuse_overlap
from emo_plugin.errors import AnalysisError, ConversionError
from emo_plugin.evaluation.analysis.checkpoint import (
    eos_token_id,
    load_emo_model,
    pad_token_id,
    set_inference_pool_size,
)
from emo_plugin.evaluation.analysis.corpus import group_by_domain, read_labelled_corpus
from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
from emo_plugin.evaluation.analysis.subset_finetune import (
    ModelWeights,
    finetune_subset,
    restoring_weights,
    steps_for_epochs,
)
from emo_plugin.evaluation.analysis.subset_report import fraction_label, markdown_report
from emo_plugin.evaluation.analysis.subset_selection import select_kept_experts
from emo_plugin.evaluation.analysis.text_encoding import encode_documents, load_text_encoder
from emo_plugin.evaluation.selection import METHODS, kept_expert_masks, write_pruned_checkpoint
from emo_plugin.evaluation.selection.keep import fraction_argument
from emo_plugin.evaluation.selection.layer_budget import layer_budget_argument
from emo_plugin.evaluation.selection.select import routed_counts
from emo_plugin.evaluation.selection.task_prompts import (
    format_prompts,
    read_task_records,
    template_fields,
    tokenize_prompts,
)
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


def task_prompts_by_domain(args, domains: list[str]) -> dict:
    """{domain: k-shot prompts} from --task-prompts, the shots and queries of each domain drawn from its records."""
    fields = template_fields(args.template, args.answer_field)
    by_domain: dict[str, list[dict]] = {}
    for record in read_task_records(args.task_prompts, fields + [args.domain_field]):
        by_domain.setdefault(str(record[args.domain_field]), []).append(record)
    missing = sorted(set(domains) - set(by_domain))
    if missing:
        raise AnalysisError(f"{args.task_prompts}: no task records with {args.domain_field} {missing}")
    return {
        name: format_prompts(by_domain[name], args.template, args.answer_field, args.num_shots, args.num_examples)
        for name in domains
    }


def split_domains(args, encode, model) -> dict[str, tuple[list, list, list | None]]:
    """{domain: (calibration sequences, held-out documents, answer starts of task prompts or None)}, as token ids."""
    grouped = group_by_domain(read_labelled_corpus(args.corpus, args.text_field, args.domain_field))
    if args.domains:
        missing = sorted(set(args.domains) - set(grouped))
        if missing:
            raise AnalysisError(
                f"{args.corpus}: no documents with {args.domain_field} {missing} (have {sorted(grouped)})"
            )
        grouped = {name: grouped[name] for name in args.domains}
    max_doc_tokens = args.max_doc_tokens or model.config.max_position_embeddings
    encode_args = (encode, eos_token_id(model), model.config.vocab_size, max_doc_tokens)
    prompts = task_prompts_by_domain(args, list(grouped)) if args.task_prompts else None
    calib_docs = 0 if prompts else args.calib_docs
    splits = {}
    for name, documents in grouped.items():
        texts = [d.text for d in documents]
        if len(texts) <= calib_docs:
            raise AnalysisError(
                f"domain {name!r} has {len(texts)} documents: need more than --calib-docs {calib_docs}"
            )
        heldout = encode_documents(texts[calib_docs:], *encode_args, args.max_eval_tokens_per_domain)
        answer_starts = None
        if prompts:
            tokens = tokenize_prompts(encode, prompts[name], eos_token_id(model), max_doc_tokens)
            calibration, answer_starts = [t.ids for t in tokens], [t.answer_start for t in tokens]
        else:
            calibration = encode_documents(texts[:calib_docs], *encode_args)
        if not calibration or not heldout:
            raise AnalysisError(f"domain {name!r}: no calibration or no held-out document with any token")
        splits[name] = (calibration, heldout, answer_starts)
    return splits


def subsets(args) -> list[tuple[str, float | list[float]]]:
    """(label, keep) of every subset to evaluate: the fractions, then the per-layer budgets."""
    return [(fraction_label(f), f) for f in args.fractions] + list(args.layer_budgets)


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


def run(args: argparse.Namespace) -> dict:
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
    labels = [label for label, _ in subsets(args)]
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
    report = markdown_report(results, labels)
    (args.out / "results.md").write_text(report)
    print(report, end="")
    print(f"wrote {args.out} in {results['wall_seconds']:.1f} s")
    return results


def check_save_finetuned(args: argparse.Namespace) -> None:
    """--save-finetuned writes ONE subset: refuse an ambiguous request or an unusable folder before any work."""
    if args.save_finetuned is None:
        return
    labels = [label for label, _ in subsets(args)]
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
