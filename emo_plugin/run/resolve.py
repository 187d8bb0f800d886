"""A training config turned, once, into the run it describes: ``resolve(cfg, world_size) -> ResolvedRun``.

Why one function: the model record, the padded vocabulary, the device, the parallel layout and the batch
arithmetic are each derived from several config fields (and the tokenizer, and the environment). Derived in
many places, they drift apart; derived here once, the planner, the fit check, the trainer, its backends and the
data builder all read the same values. ``validation.validate`` checks the fields first; what can only be
checked on derived values (the record's rules, Megatron's own config checks, what divides the world) is
checked here, so a ``ResolvedRun`` that exists is one that can be built.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from emo_plugin.errors import ConfigError, DataError
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.record_checks import record_problems
from emo_plugin.model.run_config import record_of_run_config
from emo_plugin.moe.config import EmoTransformerConfig
from emo_plugin.run.config import TrainingConfig, to_dict
from emo_plugin.run.layout import Layout
from emo_plugin.run.transformer import build_transformer_config, padded_vocab_size, use_transformer_engine
from emo_plugin.run.validation import record_field_key, validate

ATTENTION_MODES = ("causal", "dense_mask", "thd")
"""How intra-document attention runs: off (``causal``), the host path's [b, 1, s, s] masks (``dense_mask``) or
THD packed sequences in Transformer Engine's attention on the GPU (``thd``, ``training/packed_sequences.py``)."""


@dataclass(frozen=True)
class ResolvedRun:
    """Everything derived from a ``TrainingConfig`` that later code needs, computed once by ``resolve``."""

    config: TrainingConfig
    record: ModelRecord
    """The model trained: the named size with the run's overrides, the padded vocabulary and, when a tokenizer
    is configured, its EOD and pad ids."""
    vocab_source: str
    """Where ``record.vocab_size`` comes from (printed by the planner)."""
    device: str
    """'cpu' (host execution, gloo) or 'cuda' (Megatron's machinery, NCCL)."""
    layout: Layout
    num_micro_batches: int
    """Micro-batches per optimizer step on each data-parallel rank."""
    train_samples: int
    valid_samples: int
    """Samples the datasets are built for: every training step, and every validation round the schedule runs."""
    transformer_config: EmoTransformerConfig
    transformer_engine: bool
    """Whether the GPU layers are Transformer Engine's (never on CPU)."""
    attention: str
    """One of ``ATTENTION_MODES``."""

    @property
    def vocab_size(self) -> int:
        return self.record.vocab_size

    @property
    def seq_length(self) -> int:
        return self.record.seq_length

    @property
    def data_parallel_size(self) -> int:
        return self.layout.dp


def resolve(cfg: TrainingConfig, world_size: int, *, planning_only: bool = False) -> ResolvedRun:
    """The run ``cfg`` describes on ``world_size`` ranks, or ``ConfigError`` naming the field that prevents it.

    ``planning_only`` (the dry run, on any machine): skip what only the machine that trains can check — the
    data and output locations, and whether Transformer Engine is importable here.
    """
    _check_device_field(cfg)
    device = _device(cfg)
    validate(cfg, device, inputs=not planning_only)
    record = _record(cfg)
    layout = Layout.from_config(cfg, world_size)
    b = cfg.batch
    if b.global_batch_size % (b.micro_batch_size * layout.dp):
        raise ConfigError(f"batch.global_batch_size={b.global_batch_size}: expected a multiple of micro_batch_size × "
                          f"data-parallel size = {b.micro_batch_size} × {layout.dp}")
    num_micro = b.global_batch_size // (b.micro_batch_size * layout.dp)
    record, vocab_source = _with_vocabulary(cfg, record, layout.tp)
    if planning_only:
        transformer_engine = device == "cuda" and cfg.model.transformer_impl == "transformer_engine"
    else:
        transformer_engine = use_transformer_engine(cfg, device)
    try:
        transformer_config = build_transformer_config(cfg, record, device)
    except ConfigError:
        raise
    except (ValueError, AssertionError, ZeroDivisionError) as error:  # Megatron's own TransformerConfig checks
        raise ConfigError(f"model/parallel: Megatron rejected the transformer config: {error}") from None
    attention = "causal"
    if cfg.data.intra_document_attention:
        attention = "thd" if device == "cuda" else "dense_mask"
    evaluations = (cfg.schedule.train_iters // max(1, cfg.eval.interval) + 2) if cfg.eval.interval else 2
    return ResolvedRun(
        config=cfg,
        record=record,
        vocab_source=vocab_source,
        device=device,
        layout=layout,
        num_micro_batches=num_micro,
        train_samples=cfg.schedule.train_iters * b.global_batch_size,
        valid_samples=max(1, cfg.eval.iters) * b.global_batch_size * evaluations,
        transformer_config=transformer_config,
        transformer_engine=transformer_engine,
        attention=attention,
    )


def _check_device_field(cfg: TrainingConfig) -> None:
    if cfg.parallel.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"parallel.device={cfg.parallel.device!r}: expected 'auto', 'cpu' or 'cuda'")


def _device(cfg: TrainingConfig) -> str:
    """'auto' honours ``EMO_DEVICE`` (the launch scripts' switch), then CUDA availability."""
    device = cfg.parallel.device
    if device == "auto":
        device = os.environ.get("EMO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"EMO_DEVICE={device!r}: expected 'cpu' or 'cuda'")
    return device


def _record(cfg: TrainingConfig) -> ModelRecord:
    """The named size with the ``model.*``, ``emo.*`` and ``data.seq_length`` overrides, checked by the record's
    rules (``model/record_checks.py``) in this config's field names."""
    record = record_of_run_config(to_dict(cfg))
    problems = record_problems(record, key=record_field_key)
    if problems:
        name, value, expected = problems[0]
        raise ConfigError(f"{record_field_key(name)}={value!r}: expected {expected}")
    return record


def _with_vocabulary(cfg: TrainingConfig, record: ModelRecord, tp: int) -> tuple[ModelRecord, str]:
    """The record with the vocabulary the model is built with and the tokenizer's token ids."""
    if not cfg.data.tokenizer_model:
        vocab = cfg.model.vocab_size or padded_vocab_size(record.vocab_size, tp)
        source = f"size {cfg.model.size}, padded (no data.tokenizer_model)"
        source = "model.vocab_size" if cfg.model.vocab_size else source
        return dataclasses.replace(record, vocab_size=vocab), source
    from emo_plugin.data.tokenizer import EmoTokenizer

    try:
        tokenizer = EmoTokenizer(cfg.data.tokenizer_model)
    except DataError as error:
        raise ConfigError(f"data.tokenizer_model={cfg.data.tokenizer_model!r}: {error}") from None
    vocab = cfg.model.vocab_size or padded_vocab_size(tokenizer.vocab_size, tp)
    if vocab < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab}: expected >= the tokenizer's {tokenizer.vocab_size}")
    source = "model.vocab_size" if cfg.model.vocab_size else "tokenizer, padded"
    return dataclasses.replace(record, vocab_size=vocab, eos_token_id=tokenizer.eod,
                               pad_token_id=tokenizer.pad), source
