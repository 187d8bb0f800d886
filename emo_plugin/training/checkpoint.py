"""Atomic checkpoint directories around Megatron's ``dist_checkpointing`` (torch_dist format).

Layout (Megatron's): ``<root>/iter_XXXXXXX/`` and ``<root>/latest_checkpointed_iteration.txt``.
A save writes ``iter_XXXXXXX.tmp`` on all ranks, renames it to ``iter_XXXXXXX`` once every rank finished,
then replaces the ``latest`` file through a temporary file. A crash (even ``kill -9``) at any point leaves
the previous ``latest`` naming a complete directory; stale ``.tmp`` folders are removed on the next start.
What goes *into* the state dict is the trainer backend's business (``host_backend``/``megatron_backend``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing

LATEST = "latest_checkpointed_iteration.txt"


def iteration_dir(root: str | Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_iteration(root: str | Path | None) -> int | None:
    """The iteration named by ``latest`` if its directory is complete, else None."""
    if not root:
        return None
    latest = Path(root) / LATEST
    if not latest.is_file():
        return None
    iteration = int(latest.read_text().strip())
    if not (iteration_dir(root, iteration) / "metadata.json").is_file():
        raise FileNotFoundError(f"{latest} names iteration {iteration} but {iteration_dir(root, iteration)} is incomplete")
    return iteration


def remove_incomplete(root: str | Path) -> None:
    """Delete ``iter_*.tmp`` leftovers of an interrupted save (rank 0)."""
    if _is_rank0() and Path(root).is_dir():
        for stale in Path(root).glob("iter_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()


def save(root: str | Path, iteration: int, sharded_state_dict: dict, strategy=None) -> Path:
    root = Path(root)
    final = iteration_dir(root, iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(sharded_state_dict, str(tmp), sharded_strategy=strategy)
    _barrier()
    if _is_rank0():
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = root / f".{LATEST}.tmp"
        with open(latest_tmp, "w") as f:
            f.write(f"{iteration}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(latest_tmp, root / LATEST)
        _fsync_dir(root)
    _barrier()
    return final


def load_common(root: str | Path, iteration: int) -> dict:
    return dist_checkpointing.load_common_state_dict(str(iteration_dir(root, iteration)))


def load(root: str | Path, iteration: int, sharded_state_dict: dict) -> dict:
    return dist_checkpointing.load(sharded_state_dict, str(iteration_dir(root, iteration)))
