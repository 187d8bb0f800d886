"""Document pools and how much they overlap within and between domains.

A document's pool is the `pool_size` routed experts with the largest summed router probability over its tokens: the
same rule EMO uses to restrict a document's routing. If the model is modular, documents of one domain share
their pools (high Jaccard within a domain) and documents of different domains do not.
"""

from __future__ import annotations

import numpy as np


def top_p_pools(prob_sum_NR: np.ndarray, pool_size: int) -> np.ndarray:
    """Bool [N, R]: the `pool_size` experts of largest summed probability per document (ties → lower index)."""
    ranked_NR = np.argsort(-prob_sum_NR, axis=1, kind="stable")
    pools_NR = np.zeros(prob_sum_NR.shape, dtype=bool)
    np.put_along_axis(pools_NR, ranked_NR[:, :pool_size], True, axis=1)
    return pools_NR


def pairwise_jaccard(pools_NR: np.ndarray) -> np.ndarray:
    """[N, N] Jaccard similarity |A ∩ B| / |A ∪ B| of every pair of pools."""
    as_float = pools_NR.astype(np.float32)
    intersection = as_float @ as_float.T
    sizes = as_float.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return np.divide(intersection, union, out=np.ones_like(intersection), where=union > 0)


def same_domain_pairs(domain_ids_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bool [N, N] masks over distinct pairs (i < j): same domain, different domains."""
    distinct_pairs = np.triu(np.ones((len(domain_ids_N),) * 2, dtype=bool), k=1)
    same = domain_ids_N[:, None] == domain_ids_N[None, :]
    return distinct_pairs & same, distinct_pairs & ~same


def overlap_within_between(jaccard_NN: np.ndarray, domain_ids_N: np.ndarray) -> dict:
    """Mean pool Jaccard over pairs of documents of the same domain and of different domains (NaN if none)."""
    within, between = same_domain_pairs(domain_ids_N)
    mean = lambda values: float(values.mean()) if values.size else float("nan")  # noqa: E731
    return {"pool_overlap_within": mean(jaccard_NN[within]), "pool_overlap_between": mean(jaccard_NN[between])}
