"""All modularity numbers of one recording, per layer and averaged over layers, plus a short text table."""

from __future__ import annotations

import math

import numpy as np

from emo_plugin.evaluation.analysis.document_clustering import clustering_scores
from emo_plugin.evaluation.analysis.expert_usage import (
    distinct_experts_per_document,
    normalize_rows,
    routing_entropies,
    top_expert_share,
    usage_by_domain,
)
from emo_plugin.evaluation.analysis.pool_overlap import overlap_within_between, pairwise_jaccard, top_p_pools
from emo_plugin.evaluation.analysis.routing_recorder import DocumentRouting

TOP_SHARE_FRACTIONS = (0.125, 0.25)
SCALAR_KEYS = (
    "token_entropy",
    "document_entropy",
    "corpus_entropy",
    "max_entropy",
    "pool_overlap_within",
    "pool_overlap_between",
    "clustering_nmi",
    "clustering_ari",
    "distinct_experts_per_document",
    "top_12.5%_share",
    "top_25%_share",
)


def document_usage_vectors(routing: DocumentRouting, layer: int) -> np.ndarray:
    """[N, R]: each document's fraction of its routing choices per expert in `layer`."""
    return normalize_rows(routing.slot_counts[layer])


def layer_summary(
    routing: DocumentRouting, layer: int, domain_ids: np.ndarray, domain_names: list[str], pool_size: int, seed: int
) -> dict:
    """The numbers of one layer; `pool_size` is cut to the layer's routed experts."""
    slot_counts, prob_sum = routing.slot_counts[layer], routing.prob_sum[layer]
    usage_MR = usage_by_domain(slot_counts, domain_ids, len(domain_names))
    pools = top_p_pools(prob_sum, min(pool_size, prob_sum.shape[1]))
    summary = {"layer": layer, "num_routed_experts": int(slot_counts.shape[1])}
    summary |= routing_entropies(prob_sum, routing.token_entropy_sum[layer], routing.num_tokens)
    summary |= overlap_within_between(pairwise_jaccard(pools), domain_ids)
    summary |= clustering_scores(document_usage_vectors(routing, layer), domain_ids, seed)
    summary["distinct_experts_per_document"] = float(distinct_experts_per_document(slot_counts).mean())
    for fraction in TOP_SHARE_FRACTIONS:
        summary[f"top_{fraction:.1%}".replace(".0%", "%") + "_share"] = float(
            top_expert_share(usage_MR, fraction).mean()
        )
    summary["usage_by_domain"] = {name: usage_MR[k].round(6).tolist() for k, name in enumerate(domain_names)}
    return summary


def all_layers_summary(routing: DocumentRouting, domain_ids: np.ndarray, pool_size: int, seed: int) -> dict:
    """Clustering and pool overlap with every layer at once (usage vectors and pools concatenated)."""
    features = np.concatenate([document_usage_vectors(routing, layer) for layer in range(routing.num_layers)], axis=1)
    pools = np.concatenate([top_p_pools(p, min(pool_size, p.shape[1])) for p in routing.prob_sum], axis=1)
    return clustering_scores(features, domain_ids, seed) | overlap_within_between(pairwise_jaccard(pools), domain_ids)


def modularity_summary(
    routing: DocumentRouting, domain_ids: np.ndarray, domain_names: list[str], pool_size: int, seed: int = 0
) -> dict:
    """{"per_layer": [...], "mean": {...} (mean over layers), "all_layers": {...}}."""
    per_layer = [
        layer_summary(routing, layer, domain_ids, domain_names, pool_size, seed) for layer in range(routing.num_layers)
    ]
    mean = {key: float(np.mean([layer[key] for layer in per_layer])) for key in SCALAR_KEYS}
    return {
        "per_layer": per_layer,
        "mean": mean,
        "all_layers": all_layers_summary(routing, domain_ids, pool_size, seed),
    }


def format_summary_text(summary: dict) -> str:
    """A fixed-width table: one row per layer, then the mean and the all-layers scores."""
    columns = [
        ("layer", "layer", "{}"),
        ("tokH", "token_entropy", "{:.3f}"),
        ("docH", "document_entropy", "{:.3f}"),
        ("corpusH", "corpus_entropy", "{:.3f}"),
        ("poolJ_in", "pool_overlap_within", "{:.3f}"),
        ("poolJ_out", "pool_overlap_between", "{:.3f}"),
        ("NMI", "clustering_nmi", "{:.3f}"),
        ("ARI", "clustering_ari", "{:.3f}"),
        ("experts/doc", "distinct_experts_per_document", "{:.1f}"),
        ("top12.5%", "top_12.5%_share", "{:.3f}"),
        ("top25%", "top_25%_share", "{:.3f}"),
    ]
    width = max(len(header) for header, _, _ in columns) + 2

    def row(values: dict, label=None) -> str:
        cells = []
        for header, key, fmt in columns:
            value = label if (key == "layer" and label is not None) else values.get(key, float("nan"))
            cells.append(
                (fmt.format(value) if not isinstance(value, float) or math.isfinite(value) else "nan").rjust(width)
            )
        return "".join(cells)

    lines = ["".join(header.rjust(width) for header, _, _ in columns)]
    lines += [row(layer) for layer in summary["per_layer"]]
    lines.append(row(summary["mean"], label="mean"))
    all_layers = summary["all_layers"]
    lines.append(
        f"all layers concatenated: NMI {all_layers['clustering_nmi']:.3f}  ARI {all_layers['clustering_ari']:.3f}  "
        f"pool overlap within {all_layers['pool_overlap_within']:.3f} "
        f"/ between {all_layers['pool_overlap_between']:.3f}"
    )
    return "\n".join(lines) + "\n"
