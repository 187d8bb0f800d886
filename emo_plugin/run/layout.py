"""The parallel layout of a run: Megatron's group sizes derived from the config and a world size.

Megatron-Core forms two decompositions of the same ranks (``parallel_state.initialize_model_parallel``):
dense parameters see TP × CP × PP × DP, expert parameters see ETP × EP × PP × expert-DP. The planner needs both
data-parallel sizes because the distributed optimizer shards dense state over DP × CP and expert state over
expert-DP.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from emo_plugin.errors import ConfigError
from emo_plugin.run.config import TrainingConfig


@dataclass(frozen=True)
class Layout:
    world_size: int
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    etp: int = 1
    sequence_parallel: bool = False

    @property
    def dense_model_parallel(self) -> int:
        """Ranks one copy of the dense parameters spans: TP × PP × CP."""
        return self.tp * self.pp * self.cp

    @property
    def expert_model_parallel(self) -> int:
        """Ranks one copy of the expert parameters spans: ETP × EP × PP."""
        return self.etp * self.ep * self.pp

    @property
    def dp(self) -> int:
        """Data-parallel size of dense parameters (without CP)."""
        return self.world_size // self.dense_model_parallel

    @property
    def dense_grad_group(self) -> int:
        """Ranks that reduce a dense gradient: DP × CP (Megatron's ``data_parallel_group(with_context_parallel)``)."""
        return self.dp * self.cp

    @property
    def expert_dp(self) -> int:
        """Ranks that hold the same expert shard and reduce its gradient."""
        return self.world_size // self.expert_model_parallel

    def describe(self) -> str:
        sp = "+SP" if self.sequence_parallel else ""
        return (f"world {self.world_size} = TP {self.tp}{sp} × CP {self.cp} × PP {self.pp} × DP {self.dp}; "
                f"experts: ETP {self.etp} × EP {self.ep} × PP {self.pp} × expert-DP {self.expert_dp}")

    @classmethod
    def from_config(cls, cfg: TrainingConfig, world_size: int) -> "Layout":
        """The layout of ``cfg`` on ``world_size`` ranks, or ``ConfigError`` naming what does not divide."""
        layout = cls._of(cfg, world_size)
        if world_size < 1:
            raise ConfigError(f"plan.world_size={world_size}: expected an integer >= 1")
        dense = layout.dense_model_parallel
        if world_size % dense:
            raise ConfigError(f"parallel: tp*pp*cp={dense} does not divide the world size {world_size}")
        experts = layout.expert_model_parallel
        if world_size % experts:
            raise ConfigError(f"parallel.expert_model_parallel_size={layout.ep}: ep*etp*pp={experts} does not divide "
                              f"the world size {world_size}")
        return layout

    @classmethod
    def _of(cls, cfg: TrainingConfig, world_size: int) -> "Layout":
        par = cfg.parallel
        return cls(
            world_size=world_size,
            tp=par.tensor_model_parallel_size,
            pp=par.pipeline_model_parallel_size,
            cp=par.context_parallel_size,
            ep=par.expert_model_parallel_size,
            etp=par.expert_tensor_parallel_size or 1,
            sequence_parallel=par.sequence_parallel,
        )


def configured_world_size(cfg: TrainingConfig) -> int | None:
    """The world size a run is planned for: ``plan.world_size``, else the launcher's (``WORLD_SIZE`` /
    ``SLURM_NTASKS``), else None."""
    if cfg.plan.world_size is not None:
        return cfg.plan.world_size
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def smallest_world_size(cfg: TrainingConfig) -> int:
    """The fewest ranks ``cfg``'s layout runs on: both decompositions (dense and expert) must divide it."""
    layout = Layout._of(cfg, 1)
    return math.lcm(layout.dense_model_parallel, layout.expert_model_parallel)
