"""Training data: datasets from ``emo_plugin.data``, a resumable deterministic sampler, routing ids.

Position in the data is a single number, ``consumed_samples`` (saved in checkpoints). Micro-batch ``m`` of a
step gives data-parallel rank ``r`` the samples ``consumed + m·mbs·dp + r·mbs + [0, mbs)`` — Megatron's
``MegatronPretrainingSampler`` order — so a global batch is the same samples under any parallel layout.

Routing ids are drawn per sample from a generator seeded with (seed, global sample index): the index encodes
(iteration, micro-batch, data-parallel rank), so a resumed or re-laid-out run draws the same pools.
"""

from __future__ import annotations

import hashlib

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.routing_ids import build_routing_ids
from emo_plugin.training.builders import resolve_device
from emo_plugin.training.config import TrainingConfig
from emo_plugin.training.packed_sequences import ThdPacking, pack_micro_batch, packed_seq_params

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, sample) pairs over the seed space


def prepare_prefixes(cfg: TrainingConfig) -> tuple[list[str], list[float] | None]:
    """Dataset prefixes (and blend weights); tokenises ``data.corpus`` once (rank 0) if no paths are given."""
    d = cfg.data
    if d.paths:
        items = list(d.paths)
        try:
            weights = [float(w) for w in items[0::2]]
            return items[1::2], weights
        except ValueError:
            return items, None
    from emo_plugin.data.preprocess import preprocess_jsonl

    prefix = Path(d.cache_dir) / f"{Path(d.corpus).stem}_{_corpus_key(d.corpus, d.tokenizer_model)}_text_document"
    if (not dist.is_initialized() or dist.get_rank() == 0) and not Path(f"{prefix}.idx").exists():
        preprocess_jsonl([d.corpus], d.tokenizer_model, prefix, progress=False)
    if dist.is_initialized():
        dist.barrier()
    return [str(prefix)], None


def _corpus_key(corpus: str, tokenizer_model: str) -> str:
    """Names the cached tokenisation after the corpus file's identity and the tokenizer, so an edited corpus or
    another tokenizer is tokenised anew instead of silently reusing a stale cache."""
    stat = Path(corpus).stat()
    identity = f"{Path(corpus).resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{EmoTokenizer(tokenizer_model).sha256}"
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


@dataclass
class Datasets:
    tokenizer: EmoTokenizer
    train: object
    valid: object | None


def build_datasets(cfg: TrainingConfig, seq_length: int, num_train_samples: int, num_valid_samples: int) -> Datasets:
    tokenizer = EmoTokenizer(cfg.data.tokenizer_model)
    prefixes, weights = prepare_prefixes(cfg)
    intra = cfg.data.intra_document_attention
    train, valid, _ = build_emo_gpt_datasets(
        tokenizer,
        prefixes,
        seq_length,
        # Megatron refuses a None size for any split of a weighted blend; 0 means "no test set".
        [num_train_samples, num_valid_samples, 0 if weights else None],
        weights=weights,
        split=cfg.data.split,
        seed=cfg.seed,
        reset_attention_mask=intra,
        reset_position_ids=intra,
        eod_mask_loss=False,
        # The dense [s, s] mask is the host path's; on GPU thd packed sequences replace it (packed_sequences.py).
        create_attention_mask=intra and resolve_device(cfg) == "cpu",
    )
    return Datasets(tokenizer=tokenizer, train=train, valid=valid)


def sample_indices(consumed: int, micro_batch: int, mbs: int, dp_rank: int, dp_size: int) -> list[int]:
    start = consumed + micro_batch * mbs * dp_size + dp_rank * mbs
    return list(range(start, start + mbs))


def routing_ids_for(doc_ids_BS: torch.Tensor, indices: list[int], seed: int, max_docs: int) -> torch.Tensor:
    """EMO routing ids, one generator per sample so the draw is independent of the parallel layout."""
    rows = []
    for row, index in zip(doc_ids_BS, indices):
        generator = torch.Generator().manual_seed((seed * _MIX + index) % (2**63 - 1))
        rows.append(build_routing_ids(doc_ids_BS=row[None], max_documents_per_sequence=max_docs, generator=generator))
    return torch.cat(rows)


def get_micro_batch(
    dataset, indices: list[int], *, seed: int, max_docs: int, device: torch.device, packing: ThdPacking | None = None
) -> dict:
    """Collated micro-batch on ``device`` with ``routing_ids`` (wraps around short datasets).

    With ``packing`` (intra-document attention on GPU) the micro-batch is packed on the host into one thd row
    and carries ``packed_seq_params`` for ``GPTModel.forward`` (``packed_sequences.py``).
    """
    samples = [dataset[i % len(dataset)] for i in indices]
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if samples[0][key] is not None}
    batch["routing_ids"] = routing_ids_for(batch["doc_ids"], indices, seed, max_docs)
    if "attention_mask" in batch:
        batch["attention_mask"] = batch["attention_mask"].bool()  # [b, 1, s, s], True = masked
    if packing is None:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    packed, cu_seqlens, max_seqlen = pack_micro_batch(batch, packing)
    packed = {k: v.to(device, non_blocking=True) for k, v in packed.items()}
    packed["packed_seq_params"] = packed_seq_params(cu_seqlens.to(device, non_blocking=True), max_seqlen)
    return packed
