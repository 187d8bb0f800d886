"""Write an output folder so that a half-written one never looks complete and no input is ever touched.

Everything is written into a hidden temporary sibling; only when the writer finishes is it renamed to the
requested path (a same-filesystem rename). An existing non-empty output folder is refused unless ``force``;
with ``force`` the old folder is replaced only after the new one is complete. An output that is, contains or
lies inside one of the command's inputs is refused even with ``force``: replacing it would delete the input
(``export_hf --checkpoint R/checkpoints --output R --force`` once wiped every ``iter_*``).

Temporary names come from ``emo_plugin.temporary_files`` (leftovers of a killed run are removed by the next).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from emo_plugin.errors import ConversionError
from emo_plugin.path_overlap import overlap
from emo_plugin.temporary_files import remove, remove_stale_temporaries, temporary_name


def refuse_overlap(output: str | Path, inputs: Iterable[str | Path | None], flag: str = "--output") -> None:
    """Raise ``ConversionError`` if ``output`` is, contains or is inside any input (``None`` inputs skipped)."""
    for source in inputs:
        if source is None:
            continue
        how = overlap(output, source)
        if how:
            raise ConversionError(
                f"{flag} {output} {how} the input {source}; writing there would replace the input, so it is "
                "refused even with --force; choose an output folder outside the inputs (nothing was written)"
            )


def check_output_dir(path: str | Path, force: bool, inputs: Iterable[str | Path | None] = ()) -> Path:
    path = Path(path)
    refuse_overlap(path, inputs)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        what = "folder" if path.is_dir() else "file"
        raise ConversionError(f"output {what} {path} exists and is not empty; pass --force to replace it")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, force: bool = False, inputs: Iterable[str | Path | None] = ()):
    """Yields the temporary folder to write into; renames it to ``path`` on success, deletes it on error."""
    path = check_output_dir(path, force, inputs).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_name(path, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = temporary_name(path, "old")
    if path.exists() or path.is_symlink():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists() or old.is_symlink():
        remove(old)
