"""Per-document routing statistics of an `EmoForCausalLM`, accumulated while it reads a corpus.

Why per-document sums and not per-token records: a 16-layer, 127-expert model over a few hundred thousand
tokens would need gigabytes of probabilities, while every metric of the analysis (usage by domain, document
pools, clustering, entropies) needs only each document's sums.

How: through `EmoForCausalLM.observe_routing`, which reports each MoE layer's chosen experts (exactly those the
model uses, expert masks and document pools included) and its router softmax over the kept routed experts
before any document pool: the distribution that EMO pools and expert selection are both derived from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emo_plugin.evaluation.analysis.batching import DocumentBatch
from emo_plugin.evaluation.analysis.expert_usage import entropy_nats
from emo_plugin.hf.modeling_emo import RoutingEvent


@dataclass
class DocumentRouting:
    """Sums over each document's tokens, one array per layer (layers of a pruned model may differ in size).

    prob_sum[L]:           [N, R_L] Σ_t router softmax p_t
    slot_counts[L]:        [N, R_L] number of the document's (token, choice) assignments given to each expert
    token_entropy_sum[L]:  [N]      Σ_t H(p_t) in nats
    num_tokens:            [N]      tokens of each document
    """

    prob_sum: list[np.ndarray]
    slot_counts: list[np.ndarray]
    token_entropy_sum: list[np.ndarray]
    num_tokens: np.ndarray

    @property
    def num_layers(self) -> int:
        return len(self.prob_sum)


class _LayerAccumulator:
    def __init__(self, num_documents: int, num_routed: int):
        self.prob_sum = np.zeros((num_documents, num_routed), dtype=np.float64)
        self.slot_counts = np.zeros((num_documents, num_routed), dtype=np.float64)
        self.token_entropy_sum = np.zeros(num_documents, dtype=np.float64)


@torch.no_grad()
def record_document_routing(model, documents: list[list[int]], batches) -> DocumentRouting:
    """Run `model` over `batches` (from `document_batches(documents, ...)`) and sum its routing per document."""
    num_layers = model.config.num_hidden_layers
    accumulators = [_LayerAccumulator(len(documents), model.num_routed_experts(i)) for i in range(num_layers)]
    current: dict[str, object] = {}

    def record(event: RoutingEvent) -> None:
        accumulator, rows, valid_BS = accumulators[event.layer_idx], current["rows"], current["valid_BS"]
        probs_BSR = event.probabilities_TR.view(*valid_BS.shape, -1) * valid_BS[..., None]
        counts_TR = torch.zeros_like(event.probabilities_TR)
        counts_TR.scatter_add_(1, event.expert_idx_TK, torch.ones_like(event.expert_idx_TK, dtype=counts_TR.dtype))
        counts_BSR = counts_TR.view(*valid_BS.shape, -1) * valid_BS[..., None]
        accumulator.prob_sum[rows] += probs_BSR.sum(1).double().cpu().numpy()
        accumulator.slot_counts[rows] += counts_BSR.sum(1).double().cpu().numpy()
        accumulator.token_entropy_sum[rows] += entropy_nats(probs_BSR).sum(1).double().cpu().numpy()

    num_tokens = np.zeros(len(documents), dtype=np.int64)
    with model.observe_routing(record):
        for batch in batches:
            batch: DocumentBatch
            valid_BS = batch.attention_mask_BS.float()
            current.update(rows=np.asarray(batch.document_indices), valid_BS=valid_BS)
            num_tokens[batch.document_indices] = batch.attention_mask_BS.sum(1).cpu().numpy()
            model.model(input_ids=batch.input_ids_BS, attention_mask=batch.attention_mask_BS, use_cache=False)
    return DocumentRouting(
        prob_sum=[a.prob_sum for a in accumulators],
        slot_counts=[a.slot_counts for a in accumulators],
        token_entropy_sum=[a.token_entropy_sum for a in accumulators],
        num_tokens=num_tokens,
    )
