"""Hidden temporary siblings for atomic writes, and the removal of those a killed process left behind.

Why: outputs are written under a temporary name and renamed when complete, so a crash never leaves a
half-written file under the real name. A ``kill -9`` still leaves the temporary itself; the name carries the
host and process id, so the next run on this host can tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path


def temporary_name(path: Path, kind: str) -> Path:
    """``.<name>.<kind>-<host>-<pid>`` beside ``path``: hidden, and traceable to the process that wrote it."""
    return path.with_name(f".{path.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def atomic_write(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write ``content`` to ``path`` so that readers see the old file or the new one, never half of one.

    The bytes go to a hidden temporary sibling, are flushed to disk (``fsync``) and renamed over ``path``.
    """
    path = Path(path)
    temporary = temporary_name(path, "tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(content.encode("utf-8") if isinstance(content, str) else content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path, kinds: tuple[str, ...] = ("tmp", "old")) -> None:
    """Delete leftovers ``.<name>.<kind>-<this host>-<pid>*`` of processes that no longer run."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:{'|'.join(kinds)})-{re.escape(socket.gethostname())}-(\d+)")
    if not path.parent.is_dir():
        return
    for leftover in path.parent.iterdir():
        match = pattern.match(leftover.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            remove(leftover)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
