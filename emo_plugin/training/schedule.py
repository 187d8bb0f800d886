"""The learning-rate and weight-decay schedule of both backends: Megatron-Core's ``OptimizerParamScheduler``.

One definition: linear warm-up from 0, then cosine/linear decay to ``min_lr``, constant, or warmup-stable-decay
(``WSD``: the peak lr until the last ``lr_wsd_decay_iters`` of the decay, then down to ``min_lr``); constant
weight decay times each parameter group's ``wd_mult`` (0 for embeddings, norms and biases, param_groups.py).
An anneal stage (``schedule.anneal_iters``, anneal.py) is Megatron's WSD whose stable phase is the first step
after the checkpoint it continues. The GPU path attaches the scheduler to Megatron's optimizer, the host path to its
``torch.optim.AdamW``; both set it to the step being taken before each optimizer step, so the step that produces
iteration ``i`` (1-based) runs at ``lr(i)``, and a resumed run continues the schedule from its checkpoint's
iteration.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from emo_plugin.run.config import OptimizerSection, ScheduleSection

if TYPE_CHECKING:  # anneal.py reads old checkpoints' lr through this module's lr_at
    from emo_plugin.training.anneal import AnnealStart


def param_scheduler(optimizer, opt: OptimizerSection, sch: ScheduleSection,
                    anneal: AnnealStart | None = None) -> OptimizerParamScheduler:
    """Megatron's scheduler over ``optimizer.param_groups`` (sets ``lr`` and ``weight_decay × wd_mult``)."""
    weight_decay = dict(start_wd=opt.weight_decay, end_wd=opt.weight_decay, wd_incr_steps=sch.train_iters,
                        wd_incr_style="constant")
    if anneal is not None:
        return _anneal_scheduler(optimizer, sch, anneal, weight_decay)
    decay_iters = max(sch.lr_decay_iters or sch.train_iters, sch.lr_warmup_iters + 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=sch.lr_warmup_iters,
        lr_decay_steps=decay_iters,
        lr_decay_style=sch.lr_decay_style,
        wsd_decay_steps=sch.lr_wsd_decay_iters,
        lr_wsd_decay_style=sch.lr_wsd_decay_style,
        **weight_decay,
    )


def _anneal_scheduler(optimizer, sch: ScheduleSection, anneal: AnnealStart, weight_decay: dict):
    """Steps ``S+1 … S+N`` after the checkpoint at iteration ``S`` run at
    ``lr0 + (target − lr0)·(i − S − 1)/(N − 1)``: the first at the checkpoint's lr (no jump), the last at the
    target. As WSD: stable until ``S + 1``, then a linear decay of ``N − 1`` steps. The schedule is derived from
    the checkpoint, never taken from one, so a Megatron checkpoint's stored scheduler state (the previous stage's)
    does not override it."""
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=anneal.lr,
        min_lr=sch.anneal_min_lr,
        lr_warmup_steps=0,
        lr_decay_steps=anneal.iteration + sch.anneal_iters,
        lr_decay_style="WSD",
        wsd_decay_steps=sch.anneal_iters - 1,
        lr_wsd_decay_style="linear",
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,
        **weight_decay,
    )


def set_iteration(scheduler: OptimizerParamScheduler, iteration: int) -> float:
    """Put every group's lr/wd at the step that produces ``iteration``; returns the (group-independent) lr."""
    scheduler.step(iteration - scheduler.num_steps)
    return scheduler.get_lr({})


def lr_at(opt: OptimizerSection, sch: ScheduleSection, iteration: int) -> float:
    """The lr of the step that produced ``iteration`` under a (non-anneal) schedule, without an optimizer."""
    return set_iteration(param_scheduler(SimpleNamespace(param_groups=[]), opt, sch), iteration)
