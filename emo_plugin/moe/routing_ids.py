"""Per-token routing ids: how a document's identity travels from the batch to every EMO router.

A routing id is one int64 per token, built once per micro-batch on the *full* sequence (before sequence- or
context-parallel splitting), and fed to ``GPTModel.forward(padding_mask=...)``. Megatron carries that argument
to every MoE layer (through recompute, SP scatter and CP slicing), so the ids are an *input* of the forward
and can never go stale the way a global set before the forward would.

Layout: ``id = salt << SEGMENT_BITS | segment``
  * ``segment`` (1-based) numbers the maximal runs of one document within the sequence; 0 marks padding.
    Computed before any split, so every shard of a document names the same segment. Where the end-of-document
    token goes is the model's ``eos_grouping``: ``"ends"`` routes it with the document it ends (the dataset's
    ``doc_ids``, and attention, do the same); ``"starts"`` routes it with the document that follows, as AI2's
    training router does. An EOS that is the last token of a sequence (or of the tokens before padding) then
    forms a one-token segment of its own: its next document is not in this sequence.
  * ``salt`` (31 bits) is a per-document random number; with the layer number it draws the document's
    random pool size identically on every rank that holds a piece of the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from emo_plugin.data.documents import doc_ids_from_tokens
from emo_plugin.errors import DataError

SEGMENT_BITS = 20
SEGMENT_MASK = (1 << SEGMENT_BITS) - 1
SALT_LIMIT = 1 << 31
EosGrouping = Literal["ends", "starts"]
EOS_GROUPINGS = ("ends", "starts")


def segments_from_document_ids(doc_ids_BS: torch.Tensor, eos_starts_BS: torch.Tensor | None = None) -> torch.Tensor:
    """1-based index of each token's maximal same-document run within its sequence; 0 where doc id ≤ 0.

    ``doc_ids_BS`` may hold any per-token document labels (global ids from the dataset, or 1-based segment
    numbers); only changes between neighbours matter. ``eos_starts_BS`` (bool, the "starts" grouping) marks the
    end-of-document tokens, each the last token of its document in ``doc_ids_BS``: each then opens a segment
    instead, and the document after it joins that segment.
    """
    valid_BS = doc_ids_BS > 0
    starts_BS = torch.ones_like(valid_BS)
    starts_BS[:, 1:] = doc_ids_BS[:, 1:] != doc_ids_BS[:, :-1]
    if eos_starts_BS is not None:
        eos_BS = eos_starts_BS & valid_BS
        after_eos_BS = torch.zeros_like(eos_BS)
        after_eos_BS[:, 1:] = eos_BS[:, :-1]
        starts_BS = (starts_BS & ~after_eos_BS) | eos_BS
    segments_BS = torch.cumsum(starts_BS & valid_BS, dim=1)
    return torch.where(valid_BS, segments_BS, torch.zeros_like(segments_BS))


def routing_segments(
    doc_ids_BS: torch.Tensor,
    *,
    tokens_BS: torch.Tensor | None = None,
    eod_token_id: int | None = None,
    eos_grouping: EosGrouping = "ends",
) -> torch.Tensor:
    """The router's segments of the dataset's document ids (``data/documents.py``) under ``eos_grouping``;
    "starts" needs ``tokens_BS`` and ``eod_token_id`` to find the EOD tokens."""
    if eos_grouping not in EOS_GROUPINGS:
        raise ValueError(f"eos_grouping={eos_grouping!r}: expected one of {', '.join(EOS_GROUPINGS)}")
    if eos_grouping == "ends":
        return segments_from_document_ids(doc_ids_BS)
    if tokens_BS is None or eod_token_id is None:
        raise ValueError("eos_grouping='starts' needs tokens_BS and eod_token_id (to find the EOD tokens)")
    return segments_from_document_ids(doc_ids_BS, tokens_BS == eod_token_id)


def build_routing_ids(
    *,
    tokens_BS: torch.Tensor | None = None,
    eod_token_id: int | None = None,
    doc_ids_BS: torch.Tensor | None = None,
    padding_BS: torch.Tensor | None = None,
    max_documents_per_sequence: int,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    eos_grouping: EosGrouping = "ends",
) -> torch.Tensor:
    """Routing ids for a micro-batch: from the batch's document ids if given, else from EOD tokens.

    ``doc_ids_BS`` follow the dataset's convention (an EOD belongs to the document it ends, ``data/documents.py``);
    ``eos_grouping="starts"`` regroups the EOD tokens and so needs ``tokens_BS`` and ``eod_token_id`` too.
    ``padding_BS`` (bool, True = padding) marks tokens that are routed but excluded from EMO statistics.
    ``generator`` draws the per-document salts; seed it from (seed, step, micro-batch, data rank) to make
    runs reproducible, or pass one generator per sequence (e.g. seeded from each sample's index) so a
    sequence's salts do not depend on the micro-batch it is in. This function syncs with the host once (the
    document-count check, a ``DataError`` naming the bound): call it once per micro-batch on the data path; the
    layers never check.
    """
    if doc_ids_BS is None:
        if tokens_BS is None or eod_token_id is None:
            raise ValueError("build_routing_ids needs doc_ids_BS, or tokens_BS together with eod_token_id")
        doc_ids_BS = doc_ids_from_tokens(tokens_BS, eod_token_id)
    if padding_BS is not None:
        doc_ids_BS = doc_ids_BS.masked_fill(padding_BS, 0)
    segments_BS = routing_segments(doc_ids_BS, tokens_BS=tokens_BS, eod_token_id=eod_token_id,
                                   eos_grouping=eos_grouping)
    most = int(segments_BS.max()) if segments_BS.numel() else 0  # the one host sync per micro-batch
    if most > max_documents_per_sequence:
        raise DataError(
            f"a sequence of this data holds {most} documents, more than emo.max_documents_per_sequence="
            f"{max_documents_per_sequence}; set --emo.max_documents_per_sequence={most} or more"
        )
    salts_BN = _document_salts(segments_BS.shape[0], max_documents_per_sequence + 1, generator)
    salts_BS = torch.gather(salts_BN.to(segments_BS.device), 1, segments_BS)
    ids_BS = (salts_BS << SEGMENT_BITS) | segments_BS
    return torch.where(segments_BS > 0, ids_BS, torch.zeros_like(ids_BS))


def _document_salts(
    batch: int, slots_per_sequence: int, generator: torch.Generator | Sequence[torch.Generator] | None
) -> torch.Tensor:
    """Salts [B, N] for each sequence's document slots, from one generator or one per sequence."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randint(1, SALT_LIMIT, (batch, slots_per_sequence), generator=generator)
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(f"build_routing_ids got {len(generators)} generators for {batch} sequences")
    rows = [torch.randint(1, SALT_LIMIT, (1, slots_per_sequence), generator=g) for g in generators]
    return torch.cat(rows) if rows else torch.zeros(0, slots_per_sequence, dtype=torch.long)


def split_routing_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment, salt) of packed routing ids; segment 0 = padding."""
    return ids & SEGMENT_MASK, ids >> SEGMENT_BITS
