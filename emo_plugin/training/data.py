"""Training data: datasets from ``emo_plugin.data``, a resumable deterministic sampler, routing ids.

Position in the data is a single number, ``consumed_samples`` (saved in checkpoints). Micro-batch ``m`` of a
step gives data-parallel rank ``r`` the samples ``consumed + m·mbs·dp + r·mbs + [0, mbs)`` — Megatron's
``MegatronPretrainingSampler`` order — so a global batch is the same samples under any parallel layout.

Routing ids are drawn per sample from a generator seeded with (seed, global sample index): the index encodes
(iteration, micro-batch, data-parallel rank), so a resumed or re-laid-out run draws the same pools.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.paths import parse_paths
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from emo_plugin.moe.routing_ids import EosGrouping, build_routing_ids
from emo_plugin.run.config import TrainingConfig
from emo_plugin.run.resolve import ResolvedRun
from emo_plugin.training.packed_sequences import ThdPacking, pack_micro_batch, packed_seq_params

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, sample) pairs over the seed space


def prepare_prefixes(cfg: TrainingConfig) -> tuple[list[str], list[float] | None]:
    """Dataset prefixes (and blend weights); tokenises ``data.corpus`` once (rank 0) if no paths are given.

    Rank 0 tokenises with a progress bar and one worker per CPU; the other ranks wait on a gloo barrier whose
    timeout grows with the corpus size, and hear rank 0's error instead of timing out when it fails.
    """
    d = cfg.data
    if d.paths:
        return parse_paths(d.paths)
    prefix = Path(d.cache_dir) / f"{Path(d.corpus).stem}_{_corpus_key(d.corpus, d.tokenizer_model)}_text_document"
    rank = dist.get_rank() if dist.is_initialized() else 0
    error = None
    if rank == 0 and not Path(f"{prefix}.meta.json").exists():  # the sidecar is written last
        error = _tokenise_corpus(d.corpus, d.tokenizer_model, prefix)
    if dist.is_initialized():
        group = dist.new_group(backend="gloo", timeout=_tokenising_timeout(d.corpus))
        message = [error]
        dist.broadcast_object_list(message, src=0, group=group)
        dist.destroy_process_group(group)
        error = message[0]
    if error is not None:
        raise DataError(error)
    return [str(prefix)], None


def _tokenise_corpus(corpus: str, tokenizer_model: str, prefix: Path) -> str | None:
    """Tokenise ``corpus`` into ``prefix``; returns the error message instead of raising, for the other ranks."""
    from emo_plugin.data.preprocess import preprocess_jsonl

    # One worker per CPU (training has not started yet); none where this process may not have children.
    workers = 1 if multiprocessing.current_process().daemon else max(1, min(16, len(os.sched_getaffinity(0))))
    print(f"tokenising {corpus} into {prefix} (first use; {workers} workers)", file=sys.stderr, flush=True)
    try:
        meta = preprocess_jsonl([corpus], tokenizer_model, prefix, workers=workers, progress=True, empty_hint=(
            "make the dataset with tools/preprocess_data.py --skip-empty and train on it with data.paths=<prefix>"))
    except DataError as error:
        return f"data.corpus: {error}"
    print(f"tokenised {meta.num_documents} documents, {meta.num_tokens} tokens", file=sys.stderr, flush=True)
    return None


def _tokenising_timeout(corpus: str) -> timedelta:
    """How long the other ranks wait for rank 0: 10 minutes plus one second per 100 kB (single core ~1 MB/s)."""
    return timedelta(seconds=600 + Path(corpus).stat().st_size / 100_000)


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


def build_datasets(run: ResolvedRun) -> Datasets:
    """The train and validation datasets, sized for every step and validation round ``run`` schedules."""
    cfg = run.config
    tokenizer = EmoTokenizer(cfg.data.tokenizer_model)
    prefixes, weights = prepare_prefixes(cfg)
    intra = cfg.data.intra_document_attention
    train, valid, _ = build_emo_gpt_datasets(
        tokenizer,
        prefixes,
        run.seq_length,
        # Megatron refuses a None size for any split of a weighted blend; 0 means "no test set".
        [run.train_samples, run.valid_samples, 0 if weights else None],
        weights=weights,
        split=cfg.data.split,
        seed=cfg.seed,
        reset_attention_mask=intra,
        reset_position_ids=intra,
        eod_mask_loss=False,
        # The dense [s, s] mask is the host path's; on GPU thd packed sequences replace it (packed_sequences.py).
        create_attention_mask=run.attention == "dense_mask",
    )
    return Datasets(tokenizer=tokenizer, train=train, valid=valid)


def sample_indices(consumed: int, micro_batch: int, mbs: int, dp_rank: int, dp_size: int) -> list[int]:
    start = consumed + micro_batch * mbs * dp_size + dp_rank * mbs
    return list(range(start, start + mbs))


def routing_ids_for(
    doc_ids_BS: torch.Tensor,
    indices: list[int],
    seed: int,
    max_docs: int,
    *,
    tokens_BS: torch.Tensor | None = None,
    eod_token_id: int | None = None,
    eos_grouping: EosGrouping = "ends",
) -> torch.Tensor:
    """EMO routing ids, one generator per sample so the draw is independent of the parallel layout; the segments
    follow the model record's ``eos_grouping``, and the document count is checked once per micro-batch
    (``moe/routing_ids.py``)."""
    generators = [torch.Generator().manual_seed((seed * _MIX + index) % (2**63 - 1)) for index in indices]
    return build_routing_ids(doc_ids_BS=doc_ids_BS, tokens_BS=tokens_BS, eod_token_id=eod_token_id,
                             eos_grouping=eos_grouping, max_documents_per_sequence=max_docs, generator=generators)


def get_micro_batch(
    dataset,
    indices: list[int],
    *,
    seed: int,
    max_docs: int,
    device: torch.device,
    packing: ThdPacking | None = None,
    eod_token_id: int | None = None,
    eos_grouping: EosGrouping = "ends",
) -> dict:
    """Collated micro-batch on ``device`` with ``routing_ids`` (wraps around short datasets).

    With ``packing`` (intra-document attention on GPU) the micro-batch is packed on the host into one thd row
    and carries ``packed_seq_params`` for ``GPTModel.forward`` (``packed_sequences.py``).
    """
    samples = [dataset[i % len(dataset)] for i in indices]
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if samples[0][key] is not None}
    batch["routing_ids"] = routing_ids_for(
        batch["doc_ids"], indices, seed, max_docs,
        tokens_BS=batch["tokens"], eod_token_id=eod_token_id, eos_grouping=eos_grouping,
    )
    return device_micro_batch(batch, device, packing)


def device_micro_batch(batch: dict, device: torch.device, packing: ThdPacking | None = None) -> dict:
    """A collated host micro-batch on ``device``; with ``packing``, first packed on the host into one thd row that
    carries ``packed_seq_params`` (``packed_sequences.py``: its shapes cost no device synchronisation there)."""
    if "attention_mask" in batch:
        batch["attention_mask"] = batch["attention_mask"].bool()  # [b, 1, s, s], True = masked
    if packing is None:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    packed, cu_seqlens, max_seqlen = pack_micro_batch(batch, packing)
    packed = {k: v.to(device, non_blocking=True) for k, v in packed.items()}
    packed["packed_seq_params"] = packed_seq_params(cu_seqlens.to(device, non_blocking=True), max_seqlen)
    return packed
