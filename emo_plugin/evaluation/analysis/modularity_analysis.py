"""The modularity analysis of ``emo-analyze-modularity``: record how an EMO checkpoint routes a labelled corpus
and measure how modular that routing is.

The model reads up to --max-tokens-per-domain tokens of every domain (``labelled_documents.py``), one document per
row, while ``routing_recorder.py`` sums each document's router softmax and chosen experts per layer;
``modularity_summary.py`` turns the sums into the numbers and ``modularity_plots.py`` into the figures.
``run_modularity_analysis`` writes ``summary.json``, ``summary.txt`` (``summary_text``), ``document_usage.npz``
and, unless --no-plots, the PNG figures to ``args.out``; the command prints ``summary.txt``. A pool size that
covers every routed expert is warned about on stderr (every pool overlap is then 1 by construction).

``args`` is the parsed command line of ``emo-analyze-modularity`` (``emo_plugin/cli/analyze_modularity.py``, which
documents every option).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

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
from emo_plugin.evaluation.analysis.labelled_documents import TokenizedCorpus, tokenize_by_domain
from emo_plugin.evaluation.analysis.modularity_summary import (
    document_usage_vectors,
    format_summary_text,
    modularity_summary,
)
from emo_plugin.evaluation.analysis.pool_overlap import pairwise_jaccard, same_domain_pairs, top_p_pools
from emo_plugin.evaluation.analysis.routing_recorder import DocumentRouting, record_document_routing
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder

DEFAULT_POOL_SIZE = 32
LEGEND = (
    "tokH/docH/corpusH: token-, document-, corpus-level router entropy (nats); poolJ_in/out: mean Jaccard of "
    "top-P document pools within/between domains; NMI/ARI: k-means (k = #domains) of per-document usage vs domain; "
    "experts/doc: distinct routed experts per document; top12.5%/top25%: share of a domain's slots on its most "
    "used 12.5%/25% experts (mean over domains)"
)


def mean_layer_jaccard(routing: DocumentRouting, pool_size: int) -> np.ndarray:
    """[N, N] pool Jaccard averaged over layers (for the overlap histogram)."""
    matrices = [pairwise_jaccard(top_p_pools(p, min(pool_size, p.shape[1]))) for p in routing.prob_sum]
    return np.mean(matrices, axis=0)


def write_plots(out: Path, summary: dict, routing: DocumentRouting, corpus: TokenizedCorpus, pool_size: int) -> None:
    names = corpus.domain_names
    modularity_plots.plot_usage_heatmaps(summary, names, out / "usage_heatmaps.png")
    jaccard = mean_layer_jaccard(routing, pool_size)
    within, between = same_domain_pairs(corpus.domain_ids)
    distinct = np.mean([distinct_experts_per_document(c) for c in routing.slot_counts], axis=0)
    modularity_plots.plot_pools(distinct, jaccard[within], jaccard[between], pool_size, out / "pools.png")
    features = np.concatenate([document_usage_vectors(routing, layer) for layer in range(routing.num_layers)], axis=1)
    modularity_plots.plot_document_pca(features, corpus.domain_ids, names, out / "document_pca.png")
    modularity_plots.plot_layer_scores(summary, out / "layer_scores.png")


def write_document_usage(path: Path, routing: DocumentRouting, corpus: TokenizedCorpus) -> None:
    """Per-document expert-usage vectors (``usage_layer<L>``, float32), domain labels and token counts."""
    np.savez_compressed(
        path,
        domain_ids=corpus.domain_ids,
        domain_names=np.array(corpus.domain_names),
        num_tokens=routing.num_tokens,
        **{
            f"usage_layer{layer}": document_usage_vectors(routing, layer).astype(np.float32)
            for layer in range(routing.num_layers)
        },
    )


def summary_text(summary: dict) -> str:
    """The readable table of ``summary.txt`` with its legend."""
    return format_summary_text(summary) + LEGEND + "\n"


def run_modularity_analysis(args: argparse.Namespace) -> dict:
    """Record the routing of every domain and measure it; write the summary, document usage and figures to
    ``args.out`` and return the summary."""
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
    write_document_usage(args.out / "document_usage.npz", routing, corpus)
    if not args.no_plots:
        write_plots(args.out, summary, routing, corpus, pool_size)
    summary["wall_seconds"] = {
        "load_and_forward": round(forward_seconds, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.txt").write_text(summary_text(summary))
    return summary
