"""Process-group setup from the launcher's environment: torchrun, srun (SLURM_*) or a single process.

``srun`` starts one task per GPU/CPU slot and sets only SLURM variables; the trainer reads them itself
(``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``, rendezvous host = first host of the job) so that no
wrapper is needed. ``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*``, which win.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from emo_plugin.free_port import free_port
from emo_plugin.run.config import TrainingConfig


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: str


def _first_slurm_host() -> str:
    """The job's first node, where rank 0 listens: ``scontrol show hostnames`` expands ``SLURM_JOB_NODELIST``."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return first_host_of_nodelist(nodelist)


def first_host_of_nodelist(nodelist: str) -> str:
    """First host of a Slurm hostlist without scontrol: ``gpu[007-009,012],cpu1`` -> ``gpu007``."""
    match = re.match(r"([^,\[]*)(?:\[([^\],-]+))?", nodelist.strip())
    prefix, first = match.group(1), match.group(2)
    return prefix + (first or "")


def launch_env() -> LaunchEnv:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                         env.get("MASTER_ADDR", "127.0.0.1"), env.get("MASTER_PORT", "29500"))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return LaunchEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                         env.get("MASTER_ADDR") or _first_slurm_host(), port)
    # A single process needs a rendezvous port too; pick a free one unless told.
    return LaunchEnv(0, 1, 0, env.get("MASTER_ADDR", "127.0.0.1"), env.get("MASTER_PORT") or str(free_port()))


def initialize(cfg: TrainingConfig, device: str) -> LaunchEnv:
    """Start the process group (gloo on CPU, NCCL on GPU) and Megatron's parallel state."""
    launch = launch_env()
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = launch.master_addr, launch.master_port
        if device == "cuda":
            torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
        dist.init_process_group(
            "nccl" if device == "cuda" else "gloo",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=10),
        )
    return launch


def initialize_model_parallel(cfg: TrainingConfig) -> None:
    par = cfg.parallel
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=par.virtual_pipeline_model_parallel_size,
        context_parallel_size=par.context_parallel_size,
        expert_model_parallel_size=par.expert_model_parallel_size,
        expert_tensor_parallel_size=par.expert_tensor_parallel_size or 1,
    )


def shutdown() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
