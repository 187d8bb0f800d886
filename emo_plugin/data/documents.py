"""Per-token document ids: which document segment of its sample each token belongs to.

Convention (shared by the dataset and the training step): ids are 1-based in order of appearance
within a sample, a document segment is a maximal run of tokens of one document, the EOD token
belongs to the document it ends (as in attention; the router may regroup it, see ``eos_grouping`` in
``emo_plugin/moe/routing_ids.py``), and 0 means padding. Ids are *local to a sample*: a document cut
by a sample boundary is a separate segment in each sample it touches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def doc_ids_from_tokens(tokens: torch.Tensor, eod_id: int, pad_id: int | None = None) -> torch.Tensor:
    """Document ids ``[..., S]`` (int64) of ``tokens`` ``[..., S]``, from EOD positions alone.

    A new document starts right after every EOD: ids are ``1 + number of EODs strictly before
    each position`` (the cumulative EOD count shifted by one). With ``pad_id``, tokens equal to it
    get id 0. Use this when a batch carries no ``doc_ids``; it agrees with the dataset's ids
    whenever every document in the data ends with an EOD (what the preprocessor guarantees).
    """
    is_eod = (tokens == eod_id).to(torch.int64)
    doc_ids = torch.cumsum(is_eod, dim=-1) - is_eod + 1
    if pad_id is not None:
        doc_ids = doc_ids.masked_fill(tokens == pad_id, 0)
    return doc_ids


def doc_ids_from_segment_lengths(segment_lengths: Sequence[int], length: int) -> torch.Tensor:
    """Document ids ``[length]`` (int64) for consecutive segments of the given lengths, then padding.

    Segment ``i`` (0-based) gets id ``i + 1``; positions past the segments get 0; segments that
    run past ``length`` are cut there.
    """
    lengths = torch.as_tensor(list(segment_lengths), dtype=torch.int64)
    doc_ids = torch.repeat_interleave(torch.arange(1, lengths.numel() + 1, dtype=torch.int64), lengths)
    padded = torch.zeros(length, dtype=torch.int64)
    kept = min(length, doc_ids.numel())
    padded[:kept] = doc_ids[:kept]
    return padded
