"""Per-document routing statistics of an `EmoForCausalLM`, accumulated while it reads a corpus.

Why per-document sums and not per-token records: a 16-layer, 127-expert model over a few hundred thousand
tokens would need gigabytes of probabilities, while every metric of the analysis (usage by domain, document
pools, clustering, entropies) needs only each document's sums.

How: each MoE block's `route` is wrapped for the duration of the recording. The wrapper passes the block's
own routing through unchanged (so the chosen experts are exactly those the model uses, expert masks and
document pools included) and also records the router softmax over the kept routed experts, computed like
`EmoSparseMoeBlock.route` does before any document pool: the distribution that EMO pools and expert
selection are both derived from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emo_plugin.evaluation.analysis.batching import DocumentBatch


@dataclass
class DocumentRouting:
    """Sums over each document's tokens, one array per layer (layers of a pruned model may differ in size).

    prob_sum[L]:           [D, R_L] Σ_t router softmax p_t
    slot_counts[L]:        [D, R_L] number of the document's (token, choice) routed slots given to each expert
    token_entropy_sum[L]:  [D]      Σ_t H(p_t) in nats
    num_tokens:            [D]      tokens of each document
    """

    prob_sum: list[np.ndarray]
    slot_counts: list[np.ndarray]
    token_entropy_sum: list[np.ndarray]
    num_tokens: np.ndarray

    @property
    def num_layers(self) -> int:
        return len(self.prob_sum)


def router_probabilities(block, x_NH: torch.Tensor) -> torch.Tensor:
    """Softmax over the block's kept routed experts (dropped ones get probability 0), fp32 [N, R]."""
    logits_NR = F.linear(x_NH.float(), block.gate.weight.float())[:, : block.n_routed]
    if block.kept_routed_experts_R is not None:
        logits_NR = logits_NR.masked_fill(~block.kept_routed_experts_R.to(logits_NR.device), float("-inf"))
    return torch.softmax(logits_NR, dim=-1)


class _LayerAccumulator:
    def __init__(self, num_documents: int, num_routed: int):
        self.prob_sum = np.zeros((num_documents, num_routed), dtype=np.float64)
        self.slot_counts = np.zeros((num_documents, num_routed), dtype=np.float64)
        self.token_entropy_sum = np.zeros(num_documents, dtype=np.float64)


@torch.no_grad()
def record_document_routing(model, documents: list[list[int]], batches) -> DocumentRouting:
    """Run `model` over `batches` (from `document_batches(documents, ...)`) and sum its routing per document."""
    blocks = [layer.mlp for layer in model.model.layers]
    accumulators = [_LayerAccumulator(len(documents), block.n_routed) for block in blocks]
    current: dict[str, object] = {}

    def recording_route(layer_idx, original_route):
        block, accumulator = blocks[layer_idx], accumulators[layer_idx]

        def route(x_NH, document_ids_N=None, token_valid_N=None):
            gate_weights_NK, expert_idx_NK = original_route(x_NH, document_ids_N, token_valid_N)
            rows, valid_BT = current["rows"], current["valid_BT"]
            probs_BTR = router_probabilities(block, x_NH).view(*valid_BT.shape, -1) * valid_BT[..., None]
            counts_NR = torch.zeros(x_NH.shape[0], block.n_routed, device=x_NH.device)
            counts_NR.scatter_add_(1, expert_idx_NK, torch.ones_like(expert_idx_NK, dtype=counts_NR.dtype))
            counts_BTR = counts_NR.view(*valid_BT.shape, -1) * valid_BT[..., None]
            entropy_BT = -torch.special.xlogy(probs_BTR, probs_BTR).sum(-1)
            accumulator.prob_sum[rows] += probs_BTR.sum(1).double().cpu().numpy()
            accumulator.slot_counts[rows] += counts_BTR.sum(1).double().cpu().numpy()
            accumulator.token_entropy_sum[rows] += entropy_BT.sum(1).double().cpu().numpy()
            return gate_weights_NK, expert_idx_NK

        return route

    num_tokens = np.zeros(len(documents), dtype=np.int64)
    for layer_idx, block in enumerate(blocks):
        block.route = recording_route(layer_idx, block.route)
    try:
        for batch in batches:
            batch: DocumentBatch
            valid_BT = batch.attention_mask_BT.float()
            current.update(rows=np.asarray(batch.document_indices), valid_BT=valid_BT)
            num_tokens[batch.document_indices] = batch.attention_mask_BT.sum(1).cpu().numpy()
            model.model(input_ids=batch.input_ids_BT, attention_mask=batch.attention_mask_BT, use_cache=False)
    finally:
        for block in blocks:
            del block.route  # the instance attribute goes; the class's route is visible again
    return DocumentRouting(
        prob_sum=[a.prob_sum for a in accumulators],
        slot_counts=[a.slot_counts for a in accumulators],
        token_entropy_sum=[a.token_entropy_sum for a in accumulators],
        num_tokens=num_tokens,
    )
