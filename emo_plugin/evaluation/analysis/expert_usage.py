"""How a corpus spreads over the experts: usage by domain, concentration, distinct experts, entropies.

All inputs are per-document sums from `routing_recorder.DocumentRouting` for one layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (all-zero rows stay zero)."""
    totals = matrix.sum(axis=-1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=np.float64), where=totals > 0)


def entropy_nats(distributions: torch.Tensor) -> torch.Tensor:
    """Entropy of each probability distribution along the last dimension (0·log 0 = 0)."""
    return -torch.special.xlogy(distributions, distributions).sum(dim=-1)


def usage_by_domain(slot_counts_NR: np.ndarray, domain_ids_N: np.ndarray, num_domains: int) -> np.ndarray:
    """[M, R] (M = num_domains): fraction of each domain's (token, choice) assignments that went to each expert."""
    totals_MR = np.zeros((num_domains, slot_counts_NR.shape[1]))
    np.add.at(totals_MR, domain_ids_N, slot_counts_NR)
    return normalize_rows(totals_MR)


def top_expert_share(usage_MR: np.ndarray, fraction: float) -> np.ndarray:
    """[M]: share of each row's routing choices that its ceil(fraction · R) most used experts receive.

    This is the best case for running a domain on that fraction of the experts: 1.0 means the domain never
    needs the others; `fraction` itself is what uniform routing would give.
    """
    keep = max(1, math.ceil(fraction * usage_MR.shape[1]))
    return -np.sort(-usage_MR, axis=1)[:, :keep].sum(axis=1)


def distinct_experts_per_document(slot_counts_NR: np.ndarray) -> np.ndarray:
    """[N]: how many different routed experts each document's tokens used (its effective pool size)."""
    return (slot_counts_NR > 0).sum(axis=1)


def routing_entropies(prob_sum_NR: np.ndarray, token_entropy_sum_N: np.ndarray, num_tokens_N: np.ndarray) -> dict:
    """Entropies in nats of the router softmax, as emo_plugin's training metrics define them.

    token:    mean over tokens of H(p_t)                  (how sharply one token routes)
    document: mean over documents of H(mean_t∈d p_t)      (low = a document concentrates on few experts)
    corpus:   H(mean over all tokens of p_t)              (high = the corpus as a whole uses all experts)
    Modularity shows as document entropy well below corpus entropy.
    """
    has_tokens = num_tokens_N > 0
    return {
        "token_entropy": float(token_entropy_sum_N.sum() / max(num_tokens_N.sum(), 1)),
        "document_entropy": float(entropy_nats(torch.from_numpy(normalize_rows(prob_sum_NR[has_tokens]))).mean()),
        "corpus_entropy": float(entropy_nats(torch.from_numpy(normalize_rows(prob_sum_NR.sum(axis=0))))),
        "max_entropy": math.log(prob_sum_NR.shape[1]),
    }
