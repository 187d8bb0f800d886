"""Atomic checkpoint directories around Megatron's ``dist_checkpointing`` (torch_dist format).

Layout (Megatron's): ``<root>/iter_XXXXXXX/`` and ``<root>/latest_checkpointed_iteration.txt``.
A save writes ``iter_XXXXXXX.tmp`` on all ranks, renames it to ``iter_XXXXXXX`` once every rank finished,
then replaces the ``latest`` file through a temporary file. A crash (even ``kill -9``) at any point leaves
the previous ``latest`` naming a complete directory; stale ``.tmp`` folders are removed on the next start.
Retention (``keep_last_n``) runs only after the new ``latest`` is on disk, and renames a folder out of the
``iter_*`` namespace before deleting it, so an interrupted deletion never leaves a half-deleted checkpoint
that looks complete. A full disk during a save is reported as such (``CheckpointError``), the partial folder
is removed and the previous checkpoint stays the latest.
What goes *into* the state dict is the writer's business: the trainer's backends (``training/host_backend``,
``training/megatron_backend``) and the HF importer (``convert/import_hf``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint.api import CheckpointException

from emo_plugin.temporary_files import atomic_write

LATEST = "latest_checkpointed_iteration.txt"
_ITER_DIR = re.compile(r"iter_(\d{7})")
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device (ENOSPC)", errno.EDQUOT: "disk quota exceeded (EDQUOT)",
                   errno.EFBIG: "file too large for the file-size limit (EFBIG)"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read as asked; the message names the path and what to do."""


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


def is_complete(path: str | Path) -> bool:
    """A finished torch_dist checkpoint folder (Megatron writes ``metadata.json`` last)."""
    return (Path(path) / "metadata.json").is_file()


def latest_iteration(root: str | Path | None) -> int | None:
    """The iteration named by ``latest`` if its directory is complete; None without a ``latest`` file."""
    if not root:
        return None
    latest = Path(root) / LATEST
    if not latest.is_file():
        return None
    text = latest.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{latest}: expected an iteration number, found {text[:40]!r}; write the iteration of "
                              "a complete iter_XXXXXXX folder into it, or delete it to ignore this folder's "
                              "checkpoints")
    iteration = int(text)
    if not is_complete(iteration_dir(root, iteration)):
        raise CheckpointError(f"{latest} names iteration {iteration} but {iteration_dir(root, iteration)} is not a "
                              "complete checkpoint (no metadata.json); point the file at a complete iter_* folder")
    return iteration


def complete_iterations(root: str | Path) -> list[int]:
    """Iterations of the complete ``iter_XXXXXXX`` folders under ``root``, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (_ITER_DIR.fullmatch(p.name) for p in root.iterdir())
    return sorted(int(m.group(1)) for m in found if m and is_complete(root / m.group(0)))


def remove_incomplete(root: str | Path) -> None:
    """Delete leftovers of an interrupted save (``iter_*.tmp``) or deletion (``.iter_*.deleting``) (rank 0)."""
    if _is_rank0() and Path(root).is_dir():
        for stale in [*Path(root).glob("iter_*.tmp"), *Path(root).glob(".iter_*.deleting")]:
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()


def storage_problem(error: BaseException) -> str | None:
    """'no space left on device (ENOSPC)' etc. if ``error`` (or anything it wraps, on any rank) is one."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[current.errno]
        if isinstance(current, CheckpointException):
            pending.extend(failure[0] for failure in current.failures.values())
        pending.extend([current.__cause__, current.__context__])
    return None


def _free_bytes(path: Path) -> int | None:
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _describe_write_failure(error: BaseException, free: int | None) -> str | None:
    """What went wrong with the storage, if it looks like storage; ``free`` is measured before any cleanup.

    PyTorch's zip writer reports a short write as "unexpected pos A vs B" without the errno, so a nearly full
    file system (under 1 MiB available) is read as the cause too.
    """
    problem = storage_problem(error)
    if problem is None and free is not None and free < 1 << 20:
        problem = f"no space left on device ({free} bytes available)"
    if problem is None and "unexpected pos" in str(error):
        problem = "a short write (the file system took fewer bytes than written: full disk, quota or size limit)"
    return problem


def _write_error(root: Path, tmp: Path, error: BaseException, free: int | None) -> CheckpointError:
    problem = _describe_write_failure(error, free)
    try:
        previous = latest_iteration(root)
    except CheckpointError:
        previous = None
    kept = f"the previous checkpoint {iteration_dir(root, previous)} is kept as the latest" if previous is not None \
        else "no earlier checkpoint exists in this folder"
    last_line = (str(error).strip().splitlines() or [""])[-1]
    reason = problem or f"{type(error).__name__}: {last_line}"
    action = "free space there or point checkpoint.save at a larger file system" if problem else \
        "check that the folder is writable and on a healthy file system"
    return CheckpointError(f"saving {tmp} failed: {reason}; the partial folder was removed and {kept}; {action}")


def _prune(root: Path, newest: int, keep_last_n: int, protect: set[int]) -> None:
    """Keep ``newest`` and the ``keep_last_n - 1`` complete checkpoints before it; never touch ``protect`` or
    anything newer than ``newest`` (another lineage's folders are not ours to judge)."""
    older = [i for i in complete_iterations(root) if i < newest]
    doomed = [i for i in older[: max(0, len(older) - (keep_last_n - 1))] if i not in protect]
    for iteration in doomed:
        folder = iteration_dir(root, iteration)
        trash = root / f".{folder.name}.deleting"
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if doomed:
        _fsync_dir(root)


def save(root: str | Path, iteration: int, sharded_state_dict: dict, strategy=None, *, keep_last_n: int = 0,
         protect: set[int] | frozenset[int] = frozenset()) -> Path:
    """Write ``iter_XXXXXXX`` atomically and make it the latest; then apply ``keep_last_n`` (0: keep all)."""
    root = Path(root)
    final = iteration_dir(root, iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _is_rank0():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    try:
        dist_checkpointing.save(sharded_state_dict, str(tmp), sharded_strategy=strategy)
    except (OSError, RuntimeError, CheckpointException) as error:
        # Every rank fails here: DCP gathers each rank's write result before its metadata step.
        free = _free_bytes(tmp if tmp.is_dir() else root)
        if _is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(root, tmp, error, free) from None
    _barrier()
    if _is_rank0():
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(root / LATEST, f"{iteration}\n")
        _fsync_dir(root)
        if keep_last_n > 0:
            _prune(root, iteration, keep_last_n, set(protect))
    _barrier()
    return final


def load_common(root: str | Path, iteration: int) -> dict:
    return dist_checkpointing.load_common_state_dict(str(iteration_dir(root, iteration)))


def load(root: str | Path, iteration: int, sharded_state_dict: dict) -> dict:
    return dist_checkpointing.load(sharded_state_dict, str(iteration_dir(root, iteration)))
