"""Does an output path coincide with, contain or lie inside an input path? (Symlinks resolved.)

Why: a tool that replaces its output (``--force``, or simply opening it for writing) destroys an input that sits
at, or inside, that path. Every tool asks this before writing anything; the tools' own error types say so.
"""

from __future__ import annotations

from pathlib import Path


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
