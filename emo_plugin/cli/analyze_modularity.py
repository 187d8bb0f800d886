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
import json
import sys
import time
from pathlib import Path

import numpy as np

from emo_plugin.cli import model_on_corpus
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.evaluation.analysis import modularity_plots
from emo_plugin.evaluation.analysis.batching import document_batches
from emo_plugin.evaluation.analysis.checkpoint import (
    eos_token_id,
    load_emo_model,
    pad_token_id,
    set_inference_pool_size,
)
from emo_plugin.evaluation.analysis.corpus import read_labelled_corpus
from emo_plugin.evaluation.analysis.expert_usage import distinct_experts_per_document
from emo_plugin.evaluation.analysis.labelled_documents import tokenize_by_domain
from emo_plugin.evaluation.analysis.modularity_summary import (
    document_usage_vectors,
    format_summary_text,
    modularity_summary,
)
from emo_plugin.evaluation.analysis.pool_overlap import pairwise_jaccard, same_domain_pairs, top_p_pools
from emo_plugin.evaluation.analysis.routing_recorder import record_document_routing
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder
from emo_plugin.path_overlap import check_out_folder

DEFAULT_POOL_SIZE = 32
LEGEND = (
    "tokH/docH/corpusH: token-, document-, corpus-level router entropy (nats); poolJ_in/out: mean Jaccard of "
    "top-P document pools within/between domains; NMI/ARI: k-means (k = #domains) of per-document usage vs domain; "
    "experts/doc: distinct routed experts per document; top12.5%/top25%: share of a domain's slots on its most "
    "used 12.5%/25% experts (mean over domains)"
)


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


def mean_layer_jaccard(routing, pool_size: int) -> np.ndarray:
    """[D, D] pool Jaccard averaged over layers (for the overlap histogram)."""
    matrices = [pairwise_jaccard(top_p_pools(p, min(pool_size, p.shape[1]))) for p in routing.prob_sum]
    return np.mean(matrices, axis=0)


def write_plots(out: Path, summary: dict, routing, corpus, pool_size: int) -> None:
    names = corpus.domain_names
    modularity_plots.plot_usage_heatmaps(summary, names, out / "usage_heatmaps.png")
    jaccard = mean_layer_jaccard(routing, pool_size)
    within, between = same_domain_pairs(corpus.domain_ids)
    distinct = np.mean([distinct_experts_per_document(c) for c in routing.slot_counts], axis=0)
    modularity_plots.plot_pools(distinct, jaccard[within], jaccard[between], pool_size, out / "pools.png")
    features = np.concatenate([document_usage_vectors(routing, layer) for layer in range(routing.num_layers)], axis=1)
    modularity_plots.plot_document_pca(features, corpus.domain_ids, names, out / "document_pca.png")
    modularity_plots.plot_layer_scores(summary, out / "layer_scores.png")


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    model = load_emo_model(args.checkpoint, args.dtype, args.device)
    if args.inference_pool_size is not None:
        set_inference_pool_size(model, args.inference_pool_size)
    config = model.config
    pool_size = args.pool_size or config.emo_inference_pool_size or DEFAULT_POOL_SIZE
    fewest_routed = min(model.num_routed_experts(layer) for layer in range(config.num_hidden_layers))
    if pool_size >= fewest_routed:
        print(
            f"warning: pool size {pool_size} >= {fewest_routed} routed experts: every pool holds all experts "
            "and pool overlap is 1 by construction (pass a smaller --pool-size)",
            file=sys.stderr,
        )
    encode = load_text_encoder(args.checkpoint, args.tokenizer)
    corpus = tokenize_by_domain(
        read_labelled_corpus(args.corpus, args.text_field, args.domain_field),
        encode,
        eos_token_id(model),
        config.vocab_size,
        args.max_doc_tokens or config.max_position_embeddings,
        args.max_tokens_per_domain,
    )
    batches = document_batches(corpus.documents, args.batch_size, pad_token_id(model), args.device)
    routing = record_document_routing(model, corpus.documents, batches)
    forward_seconds = time.perf_counter() - started
    summary = {
        "checkpoint": str(args.checkpoint),
        "corpus": str(args.corpus),
        "domain_field": args.domain_field,
        "dtype": args.dtype,
        "pool_size": pool_size,
        "inference_pool_size": config.emo_inference_pool_size,
        "routed_experts_per_token": model.num_routed_experts_per_token(0),
        "domains": corpus.domain_stats(),
    } | modularity_summary(routing, corpus.domain_ids, corpus.domain_names, pool_size, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "document_usage.npz",
        domain_ids=corpus.domain_ids,
        domain_names=np.array(corpus.domain_names),
        num_tokens=routing.num_tokens,
        **{
            f"usage_layer{layer}": document_usage_vectors(routing, layer).astype(np.float32)
            for layer in range(routing.num_layers)
        },
    )
    if not args.no_plots:
        write_plots(args.out, summary, routing, corpus, pool_size)
    summary["wall_seconds"] = {
        "load_and_forward": round(forward_seconds, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = format_summary_text(summary) + LEGEND + "\n"
    (args.out / "summary.txt").write_text(text)
    print(text, end="")
    print(f"wrote {args.out} in {summary['wall_seconds']['total']:.1f} s")
    return summary


def checked_run(args: argparse.Namespace) -> None:
    check_out_folder(args.out, [args.checkpoint, args.corpus])  # before the model is loaded
    run(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), checked_run, argv)
