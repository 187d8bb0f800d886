"""Does an output path coincide with, contain or lie inside an input path? (Symlinks resolved.)

Why: a tool that replaces its output (``--force``, or simply opening it for writing) destroys an input that sits
at, or inside, that path. Every tool asks this before writing anything; the tools' own error types say so.
"""

from __future__ import annotations

from pathlib import Path

from emo_plugin.errors import AnalysisError


def overlap(output: str | Path, source: str | Path) -> str | None:
    """How ``output`` overlaps ``source`` ('is', 'contains', 'is inside'), or None; symlinks resolved."""
    out, src = Path(output).resolve(), Path(source).resolve()
    if out == src:
        return "is"
    if out in src.parents:
        return "contains"
    if src in out.parents:
        return "is inside"
    return None


def check_out_folder(out: Path, inputs: list[Path]) -> None:
    """An analysis tool's ``--out`` folder must not be a file, nor an input or inside one (it writes into it)."""
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {out} is a file; expected a folder to write the results into")
    for source in inputs:
        how = overlap(out, source)
        if how in ("is", "is inside"):
            raise AnalysisError(f"--out {out} {how} the input {source}; choose a folder outside the inputs")
