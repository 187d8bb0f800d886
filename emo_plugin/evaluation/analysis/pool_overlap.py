"""Document pools and how much they overlap within and between domains.

A document's pool is the P routed experts with the largest summed router probability over its tokens: the
same rule EMO uses to restrict a document's routing. If the model is modular, documents of one domain share
their pools (high Jaccard within a domain) and documents of different domains do not.
"""

from __future__ import annotations

import numpy as np


def top_p_pools(prob_sum_DR: np.ndarray, pool_size: int) -> np.ndarray:
    """Bool [D, R]: the `pool_size` experts of largest summed probability per document (ties → lower index)."""
    ranked_DR = np.argsort(-prob_sum_DR, axis=1, kind="stable")
    pools_DR = np.zeros(prob_sum_DR.shape, dtype=bool)
    np.put_along_axis(pools_DR, ranked_DR[:, :pool_size], True, axis=1)
    return pools_DR


def pairwise_jaccard(pools_DR: np.ndarray) -> np.ndarray:
    """[D, D] Jaccard similarity |A ∩ B| / |A ∪ B| of every pair of pools."""
    as_float = pools_DR.astype(np.float32)
    intersection = as_float @ as_float.T
    sizes = as_float.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - intersection
    return np.divide(intersection, union, out=np.ones_like(intersection), where=union > 0)


def same_domain_pairs(domain_ids_D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bool [D, D] masks over distinct pairs (i < j): same domain, different domains."""
    distinct_pairs = np.triu(np.ones((len(domain_ids_D),) * 2, dtype=bool), k=1)
    same = domain_ids_D[:, None] == domain_ids_D[None, :]
    return distinct_pairs & same, distinct_pairs & ~same


def overlap_within_between(jaccard_DD: np.ndarray, domain_ids_D: np.ndarray) -> dict:
    """Mean pool Jaccard over pairs of documents of the same domain and of different domains (NaN if none)."""
    within, between = same_domain_pairs(domain_ids_D)
    mean = lambda values: float(values.mean()) if values.size else float("nan")  # noqa: E731
    return {"pool_overlap_within": mean(jaccard_DD[within]), "pool_overlap_between": mean(jaccard_DD[between])}
