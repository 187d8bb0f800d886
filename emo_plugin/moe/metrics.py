"""EMO routing statistics, recorded per layer through Megatron's MoE metrics tracker.

They land next to Megatron's ``load_balancing_loss``/``z_loss`` (``moe/<name>_layer_<i>`` with per-layer
logging). All are computed on device from tensors the router already has: no host synchronisation.
Definitions (AI2's diagnostics, docs/method.md §9):

* ``emo_pool_size``: mean pool size over the documents present in the micro-batch (after any rank limit).
* ``emo_token_entropy``: mean over tokens of the entropy of the pool softmax (how sharply a token routes).
* ``emo_doc_entropy``: mean over documents of the entropy of the document's mean router distribution
  (low = the document concentrates on few experts, the modularity EMO aims for).
* ``emo_fraction_experts_used``: fraction of routed experts that received a token in the (global) batch.
* ``emo_load_imbalance``: max over experts of the (global) load divided by the mean load.

Under expert parallelism the router also records the dispatch traffic of ``moe/traffic.py`` (``ep_*``).
"""

from __future__ import annotations

import torch
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

EMO_METRIC_NAMES = (
    "emo_pool_size",
    "emo_token_entropy",
    "emo_doc_entropy",
    "emo_fraction_experts_used",
    "emo_load_imbalance",
)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-20))).sum(dim=-1)


def routing_statistics(
    *,
    scores_TR: torch.Tensor,
    valid_T: torch.Tensor,
    pool_size_N: torch.Tensor,
    is_document_N: torch.Tensor,
    doc_scores_NR: torch.Tensor,
    doc_mass_N: torch.Tensor,
    global_counts_R: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Scalars for one router call; ``scores_TR`` are pool-softmax scores over the R routed experts (suffixes:
    T tokens, N document slots, R routed experts)."""
    with torch.no_grad():
        valid = valid_T.float()
        token_entropy = (_entropy(scores_TR.float()) * valid).sum() / valid.sum().clamp_min(1)
        present_N = (is_document_N & (doc_mass_N > 0)).float()
        num_docs = present_N.sum().clamp_min(1)
        mean_pool = (pool_size_N.float() * present_N).sum() / num_docs
        doc_dist_NR = doc_scores_NR / doc_mass_N.clamp_min(1e-20).unsqueeze(-1)
        doc_entropy = (_entropy(doc_dist_NR) * present_N).sum() / num_docs
        fraction_used = (global_counts_R > 0).float().mean()
        imbalance = global_counts_R.max() / global_counts_R.mean().clamp_min(1e-20)
    return {
        "emo_pool_size": mean_pool,
        "emo_token_entropy": token_entropy,
        "emo_doc_entropy": doc_entropy,
        "emo_fraction_experts_used": fraction_used,
        "emo_load_imbalance": imbalance,
    }


def record_statistics(stats: dict[str, torch.Tensor], *, layer_number: int, num_layers: int, avg_group) -> None:
    """Per-layer values averaged over the ranks of ``avg_group`` when the tracker reports."""
    tracker = get_moe_metrics_tracker()
    for name, value in stats.items():
        tracker.record(name, value, layer_number, num_layers, avg_group=avg_group, needs_dp_avg=False)
