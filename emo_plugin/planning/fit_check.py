"""The check GPU training runs before touching a device: refuse a layout the planner says cannot fit."""

from __future__ import annotations

from emo_plugin.errors import ConfigError
from emo_plugin.planning.plan import GIB, make_plan
from emo_plugin.training.config import TrainingConfig


def check_fits(cfg: TrainingConfig, world_size: int) -> None:
    """``ConfigError`` naming the numbers when the plan of ``cfg`` on ``world_size`` ranks does not fit."""
    if cfg.plan.skip_fit_check:
        return
    plan = make_plan(cfg, world_size)
    if plan.fits:
        return
    worst = plan.worst
    st = worst.states

    def gib(n: int) -> str:
        return f"{n / GIB:.1f}"

    raise ConfigError(
        f"plan: pipeline stage {worst.stage} of this layout ({plan.layout.describe()}) needs an estimated "
        f"{gib(worst.total)} GiB per GPU (parameters {gib(st.parameters)}, gradients {gib(st.gradients)}, optimizer "
        f"{gib(st.optimizer)}, activations {gib(worst.activation_peak)}) but plan.device_memory_gib="
        f"{cfg.plan.device_memory_gib:g} minus plan.reserved_gib={cfg.plan.reserved_gib:g} leaves {gib(plan.available)}"
        f" GiB. Run `emo-pretrain --dry-run` with the same arguments and --plan.world_size={world_size} for changes "
        "that fit, or set --plan.skip_fit_check=true to train anyway."
    )
