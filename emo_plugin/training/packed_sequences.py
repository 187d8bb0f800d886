"""Intra-document attention on GPU: a micro-batch as one THD packed sequence, cut at the router's documents.

On the host path intra-document attention is a dense ``[b, 1, s, s]`` mask. On GPU, Transformer Engine's
``TEDotProductAttention`` does it with the ``thd`` layout instead: all tokens of a micro-batch in one row and
``cu_seqlens`` marking where each document starts. Megatron's attention squeezes the batch dimension for thd
(``attention.py``: ``query.squeeze(1)``), so a micro-batch of ``b`` rows becomes one ``[1, b·s]`` row; every
row start is a document boundary, so no document spans two rows. RoPE follows ``cu_seqlens`` too (positions
restart at every document) while the host path's RoPE counts from the row start; since attention never
crosses a document and RoPE scores depend only on the distance between two positions, both give the same
attention (``test_packed_row_trains_like_the_dense_mask_batch``).

The boundaries are the dataset's documents (``doc_ids``, each EOD inside the document it ends, as the host
path's dense mask has it). The router's segments (``routing_ids.py``) are the same documents, except that with
``eos_grouping="starts"`` each EOD token is routed with the next document while it attends within its own. The
packed row is one routed sequence: routing segments are renumbered 1..K across it (salts are kept, so every
document draws the same pool size as unpacked), and K must fit the router's slot table
(``emo.max_documents_per_sequence``).

Context parallelism: TE's thd attention splits every sequence into ``2·cp`` chunks (zigzag per document), so
each sequence's length must be a multiple of ``2·cp``. Each document is padded at its end to that multiple.
The padding tokens are *inside* the document's attention span (``cu_seqlens == cu_seqlens_padded``): causal
attention keeps them from influencing the document's real tokens, and unlike TE's between-sequence padding
their outputs are always defined. They carry loss mask 0 and routing id 0 (routed, but outside every pool
and outside the load-balancing statistics). With pipeline parallelism the p2p buffers need one length for
all micro-batches, so the row is padded to a fixed bound (``ThdPacking.fixed_length``) by one more filler
sequence. This rank's share is then selected with the same per-document zigzag as TE's
``thd_get_partitioned_indices`` (it and Megatron's ``get_batch_on_this_cp_rank`` run on CUDA tensors only).

Everything here runs on the host copy of the micro-batch, before it goes to the GPU: the data-dependent
shapes (number of documents, padded length) and ``max_seqlen`` — a Python int Megatron needs for the RoPE
table and TE's kernels — cost no device synchronisation. Vectorised: no loop over documents or tokens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from megatron.core.packed_seq_params import PackedSeqParams

from emo_plugin.errors import DataError
from emo_plugin.moe.routing_ids import SEGMENT_BITS, split_routing_ids

DROPPED_KEYS = ("attention_mask",)  # the dense mask is what thd replaces


@dataclass(frozen=True)
class ThdPacking:
    """How this rank packs its micro-batches."""

    max_documents: int
    """The router's slot capacity for one routed sequence (``emo.max_documents_per_sequence``)."""
    context_parallel_size: int = 1
    context_parallel_rank: int = 0
    length_multiple: int = 1
    """The packed length must also divide by this (TP size under sequence parallelism, times CP)."""
    fixed_length: int | None = None
    """Total packed length for every micro-batch (pipeline parallelism); ``None``: as short as possible."""

    @property
    def document_multiple(self) -> int:
        """Each document's padded length divides by this: ``2·cp`` for TE's thd context parallelism."""
        return 2 * self.context_parallel_size if self.context_parallel_size > 1 else 1

    def total_multiple(self) -> int:
        return math.lcm(self.document_multiple, self.length_multiple)

    def fixed_length_bound(self, micro_batch_size: int, seq_length: int) -> int:
        """Longest packed row possible: at most ``D`` documents and ``b`` padding runs, each padded by at most
        ``2·cp − 1`` tokens, rounded up to ``total_multiple``."""
        sequences = self.max_documents + micro_batch_size
        longest = micro_batch_size * seq_length + sequences * (self.document_multiple - 1)
        return -(-longest // self.total_multiple()) * self.total_multiple()


def document_starts(labels_BS: torch.Tensor) -> torch.Tensor:
    """Bool [b, s]: True where a run of equal labels (a document, a segment, padding) starts; so does every row."""
    starts_BS = torch.ones_like(labels_BS, dtype=torch.bool)
    starts_BS[:, 1:] = labels_BS[:, 1:] != labels_BS[:, :-1]
    return starts_BS


def pack_micro_batch(batch: dict, packing: ThdPacking) -> tuple[dict, torch.Tensor, int]:
    """(this rank's packed batch, every [b, s] tensor as [1, T/cp]; cu_seqlens int32 [K+1] of the full row; max_seqlen).

    ``batch`` is the host (CPU) micro-batch with ``doc_ids`` and ``routing_ids``; its dense ``attention_mask`` is
    dropped.
    """
    packed, cu_seqlens, max_seqlen = packed_layout(batch, packing)
    if packing.context_parallel_size > 1:
        index = cp_partition_index(cu_seqlens, packing.context_parallel_size, packing.context_parallel_rank)
        packed = {key: value.index_select(1, index) for key, value in packed.items()}
    return packed, cu_seqlens.to(torch.int32), max_seqlen


def packed_layout(batch: dict, packing: ThdPacking) -> tuple[dict, torch.Tensor, int]:
    """The full packed row (before the context-parallel split): tensors [1, T], cu_seqlens int64, max_seqlen."""
    ids_BS = batch["routing_ids"]
    if ids_BS.device.type != "cpu":
        raise ValueError("pack_micro_batch runs on the host copy of the micro-batch (before it moves to the GPU)")
    b, s = ids_BS.shape
    starts_T = document_starts(batch["doc_ids"]).reshape(-1)
    sequence_T = torch.cumsum(starts_T, 0) - 1  # packed-sequence index of every token
    lengths_N = torch.bincount(sequence_T)
    multiple = packing.document_multiple
    padded_N = -(-lengths_N // multiple) * multiple
    cu_padded = torch.cat([lengths_N.new_zeros(1), torch.cumsum(padded_N, 0)])
    cu_real = torch.cat([lengths_N.new_zeros(1), torch.cumsum(lengths_N, 0)])
    used = int(cu_padded[-1])
    total = _total_length(used, packing, b, s)
    if total > used:  # one filler sequence: its tokens attend among themselves only
        cu_padded = torch.cat([cu_padded, cu_padded.new_full((1,), total)])
    destination_T = torch.arange(b * s) + (cu_padded[sequence_T] - cu_real[sequence_T])  # after earlier padding
    packed = {}
    for key, value in batch.items():
        if key in DROPPED_KEYS or value is None:
            continue
        if key == "routing_ids":
            value = _renumbered(ids_BS, packing.max_documents)
        if tuple(value.shape[:2]) != (b, s):
            raise ValueError(f"micro-batch field {key!r} has shape {tuple(value.shape)}; expected [{b}, {s}, ...]")
        row = value.new_zeros((total, *value.shape[2:]))
        row[destination_T] = value.reshape(b * s, *value.shape[2:])
        packed[key] = row
    if "position_ids" in packed:  # position within the (padded) document, as reset_position_ids gives
        packed["position_ids"] = _positions(cu_padded, total).to(packed["position_ids"].dtype)
    packed = {key: value.unsqueeze(0) for key, value in packed.items()}
    max_seqlen = int((cu_padded[1:] - cu_padded[:-1]).max())
    return packed, cu_padded, max_seqlen


def _total_length(used: int, packing: ThdPacking, b: int, s: int) -> int:
    multiple = packing.total_multiple()
    if packing.fixed_length is None:
        return -(-used // multiple) * multiple
    if packing.fixed_length % multiple:
        raise ValueError(f"ThdPacking.fixed_length={packing.fixed_length} is not a multiple of {multiple}")
    if used > packing.fixed_length:
        raise DataError(
            f"a packed micro-batch of {b}×{s} tokens needs {used} positions after context-parallel padding, more "
            f"than the fixed pipeline length {packing.fixed_length}"
        )
    return packing.fixed_length


def _renumbered(ids_BS: torch.Tensor, max_documents: int) -> torch.Tensor:
    """Routing ids with segments numbered 1..K across the packed row (salts kept; padding stays 0)."""
    segments_BS, salts_BS = split_routing_ids(ids_BS)
    starts_T = document_starts(segments_BS).reshape(-1)
    valid_T = segments_BS.reshape(-1) > 0
    segments_T = torch.cumsum(starts_T & valid_T, 0)
    count = int(segments_T[-1]) if segments_T.numel() else 0
    if count > max_documents:
        b, s = ids_BS.shape
        raise DataError(
            f"a micro-batch of {b}×{s} tokens holds {count} document segments; with intra-document attention on GPU "
            f"the micro-batch is one packed sequence for the router, so emo.max_documents_per_sequence="
            f"{max_documents} must be at least {count}: raise it, or lower batch.micro_batch_size"
        )
    ids_T = (salts_BS.reshape(-1) << SEGMENT_BITS) | segments_T
    return torch.where(valid_T, ids_T, torch.zeros_like(ids_T)).view(ids_BS.shape)


def _positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    starts_T = torch.repeat_interleave(cu_seqlens[:-1], lengths)
    return torch.arange(total) - starts_T


def cp_partition_index(cu_seqlens_padded: torch.Tensor, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Positions this context-parallel rank holds: chunks ``r`` and ``2·cp−1−r`` of every sequence, in order.

    The same selection as Transformer Engine's ``thd_get_partitioned_indices`` (load-balanced causal zigzag
    per sequence); every sequence length must be a multiple of ``2·cp``.
    """
    lengths = cu_seqlens_padded[1:] - cu_seqlens_padded[:-1]
    if bool((lengths % (2 * cp_size)).any()):
        raise ValueError(f"every packed sequence length must be a multiple of 2·cp = {2 * cp_size}")
    total = int(cu_seqlens_padded[-1])
    sequence_T = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    offset_T = torch.arange(total) - cu_seqlens_padded[:-1][sequence_T]
    chunk_T = offset_T // (lengths // (2 * cp_size))[sequence_T]
    owner_T = torch.minimum(chunk_T, 2 * cp_size - 1 - chunk_T)
    return torch.nonzero(owner_T == cp_rank).squeeze(1)


def packed_seq_params(cu_seqlens: torch.Tensor, max_seqlen: int) -> PackedSeqParams:
    """Megatron's thd parameters for ``GPTModel.forward``; ``cu_seqlens`` already on the model's device.

    The padded variants equal the plain ones (padding lies inside each document, see the module docstring);
    ``pad_between_seqs=False`` says so, which also spares TE a comparison of the two on the device.
    """
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_kv=cu_seqlens,
        cu_seqlens_q_padded=cu_seqlens,
        cu_seqlens_kv_padded=cu_seqlens,
        max_seqlen_q=max_seqlen,
        max_seqlen_kv=max_seqlen,
        pad_between_seqs=False,
    )


def thd_packing_for_run(run) -> ThdPacking | None:
    """This rank's packing of ``run`` (a ``ResolvedRun``), or ``None`` where intra-document attention is off or
    runs as the host path's mask. Needs Megatron's model-parallel groups (after ``initialize_model_parallel``).
    """
    if run.attention != "thd":
        return None
    return thd_packing(run.transformer_config, run.config.batch.micro_batch_size, run.seq_length)


def thd_packing(transformer_config, micro_batch_size: int, seq_length: int) -> ThdPacking:
    """This rank's packing under Megatron's model-parallel groups (after ``initialize_model_parallel``)."""
    from megatron.core import parallel_state

    cp = parallel_state.get_context_parallel_world_size()
    tp = parallel_state.get_tensor_model_parallel_world_size() if transformer_config.sequence_parallel else 1
    packing = ThdPacking(
        max_documents=transformer_config.emo.max_documents_per_sequence,
        context_parallel_size=cp,
        context_parallel_rank=parallel_state.get_context_parallel_rank(),
        length_multiple=tp * cp,
    )
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        bound = packing.fixed_length_bound(micro_batch_size, seq_length)
        packing = dataclasses.replace(packing, fixed_length=bound)
    return packing
