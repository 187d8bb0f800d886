"""What to change when a layout does not fit: the planner re-plans single changes and their combinations.

Candidates, cheapest first: shard the optimizer (distributed optimizer), spread the experts (raise EP, padding
the routed experts with inert slots so EP divides them), recompute the MoE layers, shrink the micro-batch. Each
suggestion is a set of ``--section.field=value`` overrides with the peak the planner predicts for it; each is
resolved as a run of its own.
"""

from __future__ import annotations

import copy
import itertools

from emo_plugin.errors import ConfigError
from emo_plugin.planning.plan import Plan, make_plan
from emo_plugin.run.config import TrainingConfig, set_value
from emo_plugin.run.resolve import ResolvedRun, resolve


def _expert_parallel_options(run: ResolvedRun) -> list[dict]:
    """Larger EP sizes the world allows; an explicit ``emo.num_inert_experts`` changes with them so EP divides
    the expert slots (derived padding follows by itself)."""
    cfg, world_size = run.config, run.layout.world_size
    par = cfg.parallel
    selectable = run.record.num_selectable_experts
    per_ep = (par.expert_tensor_parallel_size or 1) * par.pipeline_model_parallel_size
    options = []
    ep = par.expert_model_parallel_size * 2
    while ep <= world_size // per_ep and ep <= selectable:
        if world_size % (ep * per_ep) == 0:
            slots = -(-selectable // ep) * ep
            change = {"parallel.expert_model_parallel_size": ep}  # derived inert padding follows EP
            if cfg.emo.num_inert_experts is not None and slots != selectable + cfg.emo.num_inert_experts:
                change.update({"model.num_moe_experts": slots, "emo.num_inert_experts": slots - selectable})
            options.append(change)
        ep *= 2
    return options


def _micro_batch_options(cfg: TrainingConfig) -> list[dict]:
    mbs = cfg.batch.micro_batch_size
    return [{"batch.micro_batch_size": m} for m in range(mbs - 1, 0, -1) if cfg.batch.global_batch_size % m == 0][:3]


def suggestions(run: ResolvedRun, limit: int = 4) -> list[tuple[dict, Plan]]:
    """Up to ``limit`` fitting change sets: fewest changes first, cheapest kind of change first."""
    cfg = run.config
    groups = []
    if not cfg.optimizer.use_distributed_optimizer:
        groups.append([{"optimizer.use_distributed_optimizer": True}])
    groups.append(_expert_parallel_options(run))
    if not cfg.model.recompute_moe:
        groups.append([{"model.recompute_moe": True}])
    groups.append(_micro_batch_options(cfg))
    groups = [g for g in groups if g]
    found: list[tuple[dict, Plan]] = []
    for count in range(1, len(groups) + 1):
        for chosen in itertools.combinations(groups, count):
            for parts in itertools.product(*chosen):
                change = {k: v for part in parts for k, v in part.items()}
                plan = _plan_with(cfg, run.layout.world_size, change)
                if plan is not None and plan.fits:
                    found.append((change, plan))
        if found:
            break
    return found[:limit]


def _plan_with(cfg: TrainingConfig, world_size: int, change: dict) -> Plan | None:
    trial = copy.deepcopy(cfg)
    for key, value in change.items():
        set_value(trial, key, value)
    try:
        return make_plan(resolve(trial, world_size, planning_only=True))
    except ConfigError:
        return None
