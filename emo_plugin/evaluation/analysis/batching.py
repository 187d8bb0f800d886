"""One document per row, right-padded: per-document statistics then come straight out of the row index.

Documents are sorted by length before batching so a batch pads little; each batch carries the indices of its
documents so results map back to the caller's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class DocumentBatch:
    document_indices: list[int]
    input_ids_BS: torch.Tensor
    attention_mask_BS: torch.Tensor  # 1 = real token, 0 = padding


def document_batches(
    documents: list[list[int]], batch_size: int, pad_id: int, device: str | torch.device = "cpu"
) -> Iterator[DocumentBatch]:
    """Batches of at most `batch_size` documents, longest first; the order is deterministic."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(documents)), key=lambda i: (-len(documents[i]), i))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        seq_len = len(documents[indices[0]])
        input_ids = torch.full((len(indices), seq_len), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), seq_len), dtype=torch.long)
        for row, index in enumerate(indices):
            tokens = documents[index]
            input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            attention_mask[row, : len(tokens)] = 1
        yield DocumentBatch(indices, input_ids.to(device), attention_mask.to(device))
