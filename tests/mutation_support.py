"""Let mutmut see the code that multi-process tests run in their worker processes.

mutmut (``scripts/mutation.sh``) first runs the test subset once with ``MUTANT_UNDER_TEST=stats`` and records,
per test, which mutated functions it reached; later each mutant only runs the tests that reached its function.
The recording lives in the test process, so functions reached only inside ``tests/parallel/harness.py``'s
rank processes would look untested. Workers therefore save their hits next to their results and the parent
adds them to its own record. Outside a mutmut stats run both functions do nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _collecting() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def save_worker_hits(path: Path) -> None:
    if _collecting():
        from mutmut import state

        path.write_text(json.dumps(sorted(state()._stats)))


def merge_worker_hits(paths: list[Path]) -> None:
    if _collecting():
        from mutmut import state

        for path in paths:
            if path.is_file():
                state()._stats.update(json.loads(path.read_text()))
