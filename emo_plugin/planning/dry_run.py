"""``emo-pretrain --dry-run``: resolve the run, plan the layout, print it; exit 0 if it fits, else 1.

Needs no GPU, data or process group. The world size is ``plan.world_size`` (a recipe states the one it was
sized for), else the launcher's (``WORLD_SIZE`` / ``SLURM_NTASKS``).
"""

from __future__ import annotations

from emo_plugin.errors import ConfigError
from emo_plugin.planning.plan import make_plan
from emo_plugin.planning.report import render
from emo_plugin.planning.suggestions import suggestions
from emo_plugin.run.config import TrainingConfig
from emo_plugin.run.layout import configured_world_size
from emo_plugin.run.resolve import resolve


def dry_run(cfg: TrainingConfig) -> int:
    world_size = configured_world_size(cfg)
    if world_size is None:
        raise ConfigError("plan.world_size=None: expected the number of GPUs to plan for, e.g. --plan.world_size=64 "
                          "(or run under torchrun/srun)")
    run = resolve(cfg, world_size, planning_only=True)
    plan = make_plan(run)
    print(render(plan, None if plan.fits else suggestions(run)))
    return 0 if plan.fits else 1
