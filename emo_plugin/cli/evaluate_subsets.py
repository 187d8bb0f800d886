"""Held-out loss of every domain when the model keeps only a fraction of its experts.

For each domain of a labelled JSON-lines corpus, the first --calib-docs documents select the experts to keep
(emo_plugin.evaluation.selection: greedy layer-wise by mean router probability by default), and the next
documents (up to --max-eval-tokens-per-domain tokens) measure the loss with 100%, 25% and 12.5% of the experts
(--fractions; fractions of all expert slots, shared included, as AI2 count them: 25% of 128 = 31 routed + 1 shared).
Dropped experts are masked before the router softmax, which equals physical pruning; 100% reproduces the full
model exactly. With --finetune-steps N each subset model is also fine-tuned briefly on the calibration
documents and evaluated again; --save-finetuned DIR (one domain, one fraction) also writes that fine-tuned
subset as a pruned Hugging Face folder, which emo-reinsert-experts puts back into the full model. Writes to --out:

  results.json          losses, perplexities, rises over the full model, kept expert counts, settings, timings
  results.md            the markdown table (also printed)
  selections/<domain>/<fraction>.json   the kept routed-expert ids per layer

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

from emo_plugin.cli import model_on_corpus
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.convert.output_dir import check_output_dir, refuse_overlap
from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.checkpoint import (
    eos_token_id,
    load_emo_model,
    pad_token_id,
    set_inference_pool_size,
)
from emo_plugin.evaluation.analysis.corpus import group_by_domain, read_labelled_corpus
from emo_plugin.evaluation.analysis.heldout_loss import heldout_loss
from emo_plugin.evaluation.analysis.subset_finetune import ModelWeights, finetune_subset, restoring_weights
from emo_plugin.evaluation.analysis.subset_report import fraction_label, markdown_report
from emo_plugin.evaluation.analysis.subset_selection import select_kept_experts
from emo_plugin.evaluation.analysis.text_encoding import encode_documents, load_text_encoder
from emo_plugin.evaluation.selection import METHODS, kept_expert_masks, write_pruned_checkpoint
from emo_plugin.evaluation.selection.keep import fraction_argument
from emo_plugin.path_overlap import check_out_folder


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
        "--method", choices=tuple(METHODS), default="greedy", help="expert selection (default: %(default)s)"
    )
    parser.add_argument(
        "--calib-docs", type=int, default=8, help="documents per domain that select the experts (default: %(default)s)"
    )
    parser.add_argument(
        "--max-eval-tokens-per-domain",
        type=int,
        default=50_000,
        help="held-out token budget per domain (default: %(default)s)",
    )
    model_on_corpus.add_execution(parser, batch_size=4)
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="also fine-tune each subset model this many steps on the calibration documents (default: 0)",
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-5, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument(
        "--save-finetuned",
        type=Path,
        help="write the fine-tuned subset here as a pruned Hugging Face folder, in --dtype (needs --finetune-steps, "
        "one --domains and one --fractions value)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of random selection and fine-tuning (default: %(default)s)"
    )
    return parser


def split_domains(args, encode, model) -> dict[str, tuple[list, list]]:
    """{domain: (calibration documents, held-out documents)}, both as token-id lists."""
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
    splits = {}
    for name, documents in grouped.items():
        texts = [d.text for d in documents]
        if len(texts) <= args.calib_docs:
            raise AnalysisError(
                f"domain {name!r} has {len(texts)} documents: need more than --calib-docs {args.calib_docs}"
            )
        calibration = encode_documents(texts[: args.calib_docs], *encode_args)
        heldout = encode_documents(texts[args.calib_docs :], *encode_args, args.max_eval_tokens_per_domain)
        if not calibration or not heldout:
            raise AnalysisError(f"domain {name!r}: no calibration or no held-out document with any token")
        splits[name] = (calibration, heldout)
    return splits


def evaluate_domain(model, args, calibration, heldout, selections_dir: Path) -> dict:
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
    for fraction in args.fractions:
        kept = select_kept_experts(model, calibration, fraction, args.method, args.seed)
        (selections_dir / f"{fraction_label(fraction)}.json").write_text(
            json.dumps({str(layer): ids for layer, ids in kept.items()}) + "\n"
        )
        model.set_expert_mask(kept_expert_masks(model, kept))
        subset = heldout_loss(model, heldout, args.batch_size, pad, args.device)
        entry = {
            "fraction": fraction,
            "kept_experts_per_layer": [len(ids) for ids in kept.values()],
            "loss": subset.loss,
            "perplexity": subset.perplexity,
            "loss_rise": subset.loss - full.loss,
        }
        if args.finetune_steps:
            with restoring_weights(model):
                entry["finetune_train_losses"] = finetune_subset(
                    model,
                    calibration,
                    args.finetune_steps,
                    args.finetune_lr,
                    args.batch_size,
                    pad,
                    args.device,
                    args.seed,
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
        result["subsets"][fraction_label(fraction)] = entry
    return result


def mean_over_domains(domains: dict, fractions: list[float]) -> dict:
    mean = lambda values: float(np.mean(values))  # noqa: E731
    summary = {"full_loss": mean([d["full_loss"] for d in domains.values()]), "subsets": {}}
    for label in map(fraction_label, fractions):
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
    model = load_emo_model(args.checkpoint, args.dtype, args.device)
    if args.inference_pool_size is not None:
        set_inference_pool_size(model, args.inference_pool_size)
    splits = split_domains(args, load_text_encoder(args.checkpoint, args.tokenizer), model)
    domains = {
        name: evaluate_domain(model, args, calibration, heldout, args.out / "selections" / name)
        for name, (calibration, heldout) in splits.items()
    }
    results = {
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        | {"inference_pool_size": model.config.emo_inference_pool_size},
        "domains": domains,
        "mean": mean_over_domains(domains, args.fractions),
    }
    if 1.0 in args.fractions:
        results["full_model_reproduced_by_100%"] = all(
            d["subsets"]["100%"]["loss"] == d["full_loss"] for d in domains.values()
        )
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = markdown_report(results, args.fractions)
    (args.out / "results.md").write_text(report)
    print(report, end="")
    print(f"wrote {args.out} in {results['wall_seconds']:.1f} s")
    return results


def check_save_finetuned(args: argparse.Namespace) -> None:
    """--save-finetuned writes ONE subset: refuse an ambiguous request or an unusable folder before any work."""
    if args.save_finetuned is None:
        return
    if not args.finetune_steps or len(args.fractions) != 1 or len(args.domains or ()) != 1:
        raise AnalysisError(
            "--save-finetuned writes one fine-tuned subset: it needs --finetune-steps N, one --domains name and "
            f"one --fractions value (got {args.finetune_steps} steps, domains {args.domains}, fractions "
            f"{args.fractions})"
        )
    refuse_overlap(args.save_finetuned, [args.checkpoint, args.corpus], flag="--save-finetuned")
    check_output_dir(args.save_finetuned, force=False)


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    check_save_finetuned(args)
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
