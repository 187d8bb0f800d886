"""Do documents cluster by domain in expert-usage space?

k-means with k = number of domains over the per-document expert-usage vectors, compared with the domain
labels by normalized mutual information and adjusted Rand index: about 0 when usage says nothing about the
domain (a standard MoE routes by surface tokens), 1 when every domain has its own experts.
"""

from __future__ import annotations

import numpy as np

from emo_plugin.errors import AnalysisError


def clustering_scores(features_NF: np.ndarray, domain_ids_N: np.ndarray, seed: int = 0) -> dict:
    """NMI and ARI between the domain labels and k-means clusters of `features_NF` (rows = documents)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    num_domains = len(np.unique(domain_ids_N))
    if num_domains < 2:
        raise AnalysisError("clustering needs documents of at least 2 domains")
    if len(domain_ids_N) <= num_domains:
        raise AnalysisError(f"clustering needs more documents ({len(domain_ids_N)}) than domains ({num_domains})")
    clusters = KMeans(n_clusters=num_domains, n_init=10, random_state=seed).fit_predict(features_NF)
    return {
        "clustering_nmi": float(normalized_mutual_info_score(domain_ids_N, clusters)),
        "clustering_ari": float(adjusted_rand_score(domain_ids_N, clusters)),
    }
