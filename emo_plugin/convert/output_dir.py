"""Write a checkpoint folder so that a half-written one never looks complete.

Everything is written into a hidden temporary sibling; only when the writer finishes is it renamed to the
requested path (a same-filesystem rename). An existing non-empty output folder is refused unless ``force``;
with ``force`` the old folder is replaced only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from emo_plugin.convert.errors import ConversionError


def check_output_dir(path: str | Path, force: bool) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise ConversionError(f"output folder {path} exists and is not empty; pass --force to replace it")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, force: bool = False):
    """Yields the temporary folder to write into; renames it to ``path`` on success, deletes it on error."""
    path = check_output_dir(path, force).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
