"""Learning-rate schedule: linear warm-up, then cosine (or linear) decay to ``min_lr`` (Megatron's shape)."""

from __future__ import annotations

import math

from emo_plugin.training.config import OptimizerSection, ScheduleSection


def learning_rate(iteration: int, opt: OptimizerSection, sch: ScheduleSection) -> float:
    """LR for the optimizer step that produces ``iteration`` (1-based)."""
    if sch.lr_warmup_iters and iteration <= sch.lr_warmup_iters:
        return opt.lr * iteration / sch.lr_warmup_iters
    if sch.lr_decay_style == "constant":
        return opt.lr
    decay_iters = (sch.lr_decay_iters or sch.train_iters) - sch.lr_warmup_iters
    progress = min(1.0, (iteration - sch.lr_warmup_iters) / max(1, decay_iters))
    factor = 0.5 * (1 + math.cos(math.pi * progress)) if sch.lr_decay_style == "cosine" else 1 - progress
    return opt.min_lr + (opt.lr - opt.min_lr) * factor
