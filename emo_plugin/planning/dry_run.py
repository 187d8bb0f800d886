"""``emo-pretrain --dry-run``: check the model config, plan the layout, print it; exit 0 if it fits, else 1.

Needs no GPU, data or process group. The world size is ``plan.world_size`` (a recipe states the one it was
sized for), else the launcher's (``WORLD_SIZE`` / ``SLURM_NTASKS``).
"""

from __future__ import annotations

import os

from emo_plugin.errors import ConfigError
from emo_plugin.planning.plan import make_plan
from emo_plugin.planning.report import render
from emo_plugin.planning.suggestions import suggestions
from emo_plugin.training.builders import build_transformer_config, resolve_device
from emo_plugin.training.config import TrainingConfig


def planned_world_size(cfg: TrainingConfig) -> int:
    if cfg.plan.world_size is not None:
        return cfg.plan.world_size
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    raise ConfigError("plan.world_size=None: expected the number of GPUs to plan for, e.g. --plan.world_size=64 "
                      "(or run under torchrun/srun)")


def dry_run(cfg: TrainingConfig) -> int:
    try:
        build_transformer_config(cfg, resolve_device(cfg))
    except ConfigError:
        raise
    except (ValueError, AssertionError, ZeroDivisionError) as error:  # Megatron's own TransformerConfig checks
        raise ConfigError(f"model/parallel: Megatron rejected the transformer config: {error}") from None
    world_size = planned_world_size(cfg)
    plan = make_plan(cfg, world_size)
    print(render(plan, None if plan.fits else suggestions(cfg, world_size)))
    return 0 if plan.fits else 1
