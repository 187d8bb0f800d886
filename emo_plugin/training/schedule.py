"""The learning-rate and weight-decay schedule of both backends: Megatron-Core's ``OptimizerParamScheduler``.

One definition: linear warm-up from 0, then cosine/linear decay to ``min_lr`` (or constant), constant weight
decay times each parameter group's ``wd_mult`` (0 for embeddings, norms and biases, param_groups.py). The GPU
path attaches it to Megatron's optimizer, the host path to its ``torch.optim.AdamW``; both set the scheduler to
the step being taken before each optimizer step, so the step that produces iteration ``i`` (1-based) runs at
``lr(i)``, and a resumed run continues the schedule from its checkpoint's iteration.
"""

from __future__ import annotations

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from emo_plugin.training.config import OptimizerSection, ScheduleSection


def param_scheduler(optimizer, opt: OptimizerSection, sch: ScheduleSection) -> OptimizerParamScheduler:
    """Megatron's scheduler over ``optimizer.param_groups`` (sets ``lr`` and ``weight_decay × wd_mult``)."""
    decay_iters = max(sch.lr_decay_iters or sch.train_iters, sch.lr_warmup_iters + 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=sch.lr_warmup_iters,
        lr_decay_steps=decay_iters,
        lr_decay_style=sch.lr_decay_style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=sch.train_iters,
        wd_incr_style="constant",
    )


def set_iteration(scheduler: OptimizerParamScheduler, iteration: int) -> float:
    """Put every group's lr/wd at the step that produces ``iteration``; returns the (group-independent) lr."""
    scheduler.step(iteration - scheduler.num_steps)
    return scheduler.get_lr({})

