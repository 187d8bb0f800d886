"""Next-token loss of a model on whole documents, summed exactly so subsets can be compared to the full model.

Each document is one row; the loss of a row is the cross-entropy of predicting tokens 1..n-1 from their
prefixes (eos included as a target, padding excluded). Sums are accumulated in float64 and divided once, so the
result does not depend on how documents are grouped into batches beyond the model's own arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emo_plugin.evaluation.analysis.batching import document_batches


@dataclass
class LossResult:
    nll_sum: float
    num_predicted_tokens: int

    @property
    def loss(self) -> float:
        return self.nll_sum / max(self.num_predicted_tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


@torch.no_grad()
def heldout_loss(model, documents: list[list[int]], batch_size: int, pad_id: int, device) -> LossResult:
    """Summed next-token cross-entropy over `documents` (row by row, so logits of one row at a time in fp32)."""
    was_training = model.training
    model.eval()
    nll_sum, num_predicted = 0.0, 0
    for batch in document_batches(documents, batch_size, pad_id, device):
        logits_BSV = model(input_ids=batch.input_ids_BS, attention_mask=batch.attention_mask_BS, use_cache=False).logits
        lengths = batch.attention_mask_BS.sum(1).tolist()
        for row, length in enumerate(lengths):
            if length < 2:
                continue
            targets = batch.input_ids_BS[row, 1:length]
            nll_sum += float(F.cross_entropy(logits_BSV[row, : length - 1].float(), targets, reduction="sum").double())
            num_predicted += length - 1
    model.train(was_training)
    return LossResult(nll_sum, num_predicted)
