"""Will the run fit? The planner's estimate, checked before any process group, model or device memory exists.

Why: a mistyped size (``--model.hidden_size=1000000``, ``--data.seq_length=10000000``, ``--train-iters=1e12``)
otherwise ends in a ``MemoryError``, an OOM kill or minutes of swapping, long after the config was accepted.
One estimator serves every check: ``make_plan``'s parameters, gradients, optimizer state and activations per
rank. A GPU layout must fit the accelerator (``plan.device_memory_gib`` minus ``plan.reserved_gib``; skipped
with ``plan.skip_fit_check``); a CPU run must fit this machine's RAM, checked part by part so only what
cannot possibly fit is refused, naming the field that dominates. Megatron's dataset indices live in host RAM
on either device.
"""

from __future__ import annotations

import os

from emo_plugin.errors import ConfigError
from emo_plugin.model.sizes import SIZES
from emo_plugin.planning.plan import GIB, Plan, make_plan
from emo_plugin.run.config import TrainingConfig
from emo_plugin.run.layout import configured_world_size, smallest_world_size
from emo_plugin.run.resolve import ResolvedRun, resolve

INDEX_BYTES_PER_SAMPLE = 32  # Megatron's document, sample and shuffle indices


def physical_memory_bytes() -> int:
    """This machine's RAM (the budget of a CPU run; also bounds what one host can feed a GPU run)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(run: ResolvedRun, host_memory: int | None = None) -> None:
    """``ConfigError`` naming the numbers and the field to change when ``run`` cannot fit."""
    budget = physical_memory_bytes() if host_memory is None else host_memory
    _check_indices(run, budget)
    if run.device == "cpu":
        _check_host(run, make_plan(run), budget)
    elif not run.config.plan.skip_fit_check:
        _check_device(run, make_plan(run))


def check_config(cfg: TrainingConfig, world_size: int | None = None) -> ResolvedRun:
    """``emo-pretrain --check-config``: ``cfg`` resolved on ``world_size`` ranks (else ``plan.world_size`` or the
    launcher's, else the smallest world its layout runs on) and checked to fit; returns the resolved run."""
    run = resolve(cfg, world_size or configured_world_size(cfg) or smallest_world_size(cfg))
    check_fits(run)
    return run


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _check_indices(run: ResolvedRun, budget: int) -> None:
    samples = run.train_samples + run.valid_samples
    if samples * INDEX_BYTES_PER_SAMPLE > budget:
        raise ConfigError(f"schedule.train_iters/eval.iters: {samples} samples ((train_iters + eval.iters × "
                          f"validations) × global_batch_size) need ~{_gib(samples * INDEX_BYTES_PER_SAMPLE)} of "
                          f"dataset indices, more than the {_gib(budget)} available")


def _size_fields(run: ResolvedRun) -> str:
    """``model.size='tiny'`` and the record fields this run sets to other values than its named size's."""
    cfg = run.config
    named = SIZES[cfg.model.size].to_dict()
    overrides = [f"{section}.{name}={value}" for section in ("model", "emo")
                 for name, value in vars(getattr(cfg, section)).items()
                 if name in named and value not in (None, named[name])]
    return f"model.size={cfg.model.size!r}{''.join(', ' + o for o in overrides)}"


def _check_host(run: ResolvedRun, plan: Plan, budget: int) -> None:
    worst = plan.worst
    if worst.states.total > budget:
        raise ConfigError(f"{_size_fields(run)}: the model's weights, gradients and Adam state need "
                          f"~{_gib(worst.states.total)} per rank, more than the {_gib(budget)} available; pick a "
                          "smaller model.size or fields")
    if worst.activation_peak > budget:
        raise ConfigError(f"batch.micro_batch_size/data.seq_length: one micro-batch of {plan.micro_batch_size} × "
                          f"{run.seq_length} tokens needs ~{_gib(worst.activation_peak)} of activations, more than "
                          f"the {_gib(budget)} available")


def _check_device(run: ResolvedRun, plan: Plan) -> None:
    if plan.fits:
        return
    worst, cfg = plan.worst, run.config
    st = worst.states

    def gib(n: int) -> str:
        return f"{n / GIB:.1f}"

    raise ConfigError(
        f"plan: pipeline stage {worst.stage} of this layout ({plan.layout.describe()}) needs an estimated "
        f"{gib(worst.total)} GiB per GPU (parameters {gib(st.parameters)}, gradients {gib(st.gradients)}, optimizer "
        f"{gib(st.optimizer)}, activations {gib(worst.activation_peak)}) but plan.device_memory_gib="
        f"{cfg.plan.device_memory_gib:g} minus plan.reserved_gib={cfg.plan.reserved_gib:g} leaves {gib(plan.available)}"
        f" GiB. Run `emo-pretrain --dry-run` with the same arguments and --plan.world_size="
        f"{run.layout.world_size} for changes that fit, or set --plan.skip_fit_check=true to train anyway."
    )
