"""Will the run fit? A coarse memory estimate, checked before anything is allocated.

Why: a mistyped size (``--model.hidden_size=1000000``, ``--data.seq_length=10000000``, ``--train-iters=1e12``)
otherwise ends in a ``MemoryError``, an OOM kill or minutes of swapping, long after the config was accepted.
The estimate is deliberately generous (it only refuses what cannot possibly fit) and names the field that
dominates, so the message says what to change.
"""

from __future__ import annotations

import os

from emo_plugin.model.record import ModelRecord
from emo_plugin.planning.parameters import model_parameters

BYTES_PER_PARAM = 16  # fp32 weight + grad + two Adam moments
INDEX_BYTES_PER_SAMPLE = 32  # Megatron's document, sample and shuffle indices


def physical_memory_bytes() -> int:
    """This machine's RAM (the budget of a CPU run; also bounds what one host can feed a GPU run)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes(size: ModelRecord, micro_batch_size: int, intra_document_attention: bool) -> int:
    """fp32 activations of one micro-batch kept for backward, plus the dense [s, s] masks and scores."""
    s, d = size.seq_length, size.hidden_size
    per_layer = micro_batch_size * s * (20 * d + 2 * size.num_attention_heads * s) * 4
    mask = micro_batch_size * s * s if intra_document_attention else 0
    return size.num_layers * per_layer + mask


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def memory_problems(size: ModelRecord, vocab_size: int, micro_batch_size: int, num_samples: int,
                    intra_document_attention: bool, model_shards: int, budget: int) -> list[tuple[str, str]]:
    """``(field, message)`` for each part of the run that alone exceeds ``budget`` bytes."""
    problems = []
    state = model_parameters(size, vocab_size) * BYTES_PER_PARAM // max(1, model_shards)
    if state > budget:
        problems.append(("model", f"the model's weights, gradients and Adam state need ~{_gib(state)} per rank, "
                                  f"more than the {_gib(budget)} available; pick a smaller model.size or fields"))
    acts = activation_bytes(size, micro_batch_size, intra_document_attention)
    if acts > budget:
        problems.append(("batch.micro_batch_size/data.seq_length",
                         f"one micro-batch of {micro_batch_size} × {size.seq_length} tokens needs ~{_gib(acts)} of "
                         f"activations, more than the {_gib(budget)} available"))
    index = num_samples * INDEX_BYTES_PER_SAMPLE
    if index > budget:
        problems.append(("schedule.train_iters/eval.iters",
                         f"{num_samples} samples ((train_iters + eval.iters × evaluations) × global_batch_size) need "
                         f"~{_gib(index)} of "
                         f"dataset indices, more than the {_gib(budget)} available"))
    return problems
