"""Per-layer keep budgets: ``--keep-per-layer`` (select_experts) and ``--layer-budgets`` (evaluate_subsets).

Spelling: a comma-separated list with one entry per layer, each entry a keep value in the ``keep.py`` rule
(fraction <= 1 or whole count of slots > 1), optionally followed by ``xN`` to repeat it for N layers:

* ``16,16,8,8``        — 16 slots in layers 0-1, 8 in layers 2-3;
* ``100%x2,8x14``      — every expert in the first 2 layers, then 8 slots in the next 14.

Why a list and a repeat: early layers show little domain structure, so a budget that keeps them whole and
prunes later layers harder is the natural experiment next to the uniform ``--keep``; ``xN`` keeps the spelling
short for 16-layer models. Whether the list has one entry per layer, and whether each entry fits the layer,
is checked against the model (``select.py``), which knows the layer count and slots.
"""

from __future__ import annotations

import argparse

from emo_plugin.evaluation.selection.keep import parse_keep


def parse_layer_budget(text: str) -> list[float]:
    """Per-layer keep values of a spelling; ``ValueError`` names the entry that is wrong."""
    budget = []
    for position, entry in enumerate(str(text).split(","), start=1):
        value, times, repeat = entry.strip().partition("x")
        if not value:
            raise ValueError(f"{text!r}: entry {position} is empty; write e.g. 16,16,8,8 or 100%x2,8x14")
        try:
            keep = parse_keep(value)
        except ValueError as error:
            raise ValueError(f"{text!r}: entry {position}: {error}") from None
        if times and not (repeat.strip().isdigit() and int(repeat) >= 1):
            raise ValueError(f"{text!r}: entry {position} ({entry.strip()!r}): 'x' must be followed by a layer "
                             "count >= 1, e.g. 8x14")
        budget += [keep] * (int(repeat) if times else 1)
    return budget


def layer_budget_argument(text: str) -> list[float]:
    """argparse ``type`` for a per-layer budget."""
    try:
        return parse_layer_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
