"""PNG figures of a modularity analysis (matplotlib, headless).

usage_heatmaps.png   domain × expert usage, one panel per layer: modular routing shows as blocks
pools.png            distinct experts per document, and pool Jaccard within vs between domains
document_pca.png     documents in 2-D (PCA of all layers' usage vectors), coloured by domain
layer_scores.png     clustering NMI/ARI and pool overlap per layer
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_usage_heatmaps(summary: dict, domain_names: list[str], path: Path) -> None:
    plt = _pyplot()
    layers = summary["per_layer"]
    columns = min(4, len(layers))
    rows = math.ceil(len(layers) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 0.35 * len(domain_names) * rows + 1.5 * rows), squeeze=False
    )
    for ax in axes.flat[len(layers) :]:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        usage_MR = np.array([layer["usage_by_domain"][name] for name in domain_names])
        image = ax.imshow(usage_MR, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"layer {layer['layer']}", fontsize=9)
        ax.set_yticks(range(len(domain_names)), domain_names, fontsize=7)
        ax.set_xlabel("expert", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("fraction of each domain's routing choices per expert")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pools(
    distinct_experts_N: np.ndarray, within: np.ndarray, between: np.ndarray, pool_size: int, path: Path
) -> None:
    """`distinct_experts_N` and the Jaccard values are averaged over layers."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.hist(distinct_experts_N, bins=30, color="tab:gray")
    left.set_xlabel("distinct routed experts used by a document (mean over layers)")
    left.set_ylabel("documents")
    bins = np.linspace(0, 1, 41)
    for values, label, color in ((within, "same domain", "tab:blue"), (between, "different domains", "tab:orange")):
        if values.size:
            right.hist(values, bins=bins, density=True, alpha=0.6, label=label, color=color)
    right.set_xlabel(f"Jaccard of top-{pool_size} pools (mean over layers)")
    right.set_ylabel("density of document pairs")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_document_pca(features_NF: np.ndarray, domain_ids_N: np.ndarray, domain_names: list[str], path: Path) -> None:
    from sklearn.decomposition import PCA

    plt = _pyplot()
    points = (
        PCA(n_components=2, random_state=0).fit_transform(features_NF)
        if features_NF.shape[0] >= 2
        else np.zeros((features_NF.shape[0], 2))
    )
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for k, name in enumerate(domain_names):
        chosen = domain_ids_N == k
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.7, label=name)
    ax.set_title("documents by expert usage (PCA, all layers)")
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layer_scores(summary: dict, path: Path) -> None:
    plt = _pyplot()
    layers = summary["per_layer"]
    x = [layer["layer"] for layer in layers]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, label in (
        ("clustering_nmi", "clustering NMI"),
        ("clustering_ari", "clustering ARI"),
        ("pool_overlap_within", "pool Jaccard, same domain"),
        ("pool_overlap_between", "pool Jaccard, different domains"),
    ):
        ax.plot(x, [layer[key] for layer in layers], marker="o", label=label)
    ax.set_xlabel("layer")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
