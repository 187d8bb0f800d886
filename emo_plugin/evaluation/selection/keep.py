"""How many Hugging Face experts (routed + shared) a subset keeps: one spelling rule for select_experts --keep and
evaluate_subsets --fractions.

* A number <= 1 (or a percentage) is a FRACTION of all Hugging Face experts, shared included: ``0.25`` = ``25%``;
  ``1``, ``1.0`` and ``100%`` all mean every expert.
* A number > 1 is a COUNT of experts (routed + shared) and must be whole: ``32`` = 32 experts (AI2's "32 of 128").
* Anything else is refused with a message: ``1.5`` (neither), ``0`` or negative, a count above the layer's
  experts (once silently clamped), a count for ``--fractions``.

Why this rule: the two tools used to read ``1.0`` differently (one expert vs every expert). One expert can never be a
valid selection (a token needs its top-k routed experts), so reading 1 as 100% loses nothing.
"""

from __future__ import annotations

import argparse
import math

from emo_plugin.errors import ConversionError


def parse_keep(text: str | float) -> float:
    """The ``keep`` value of a spelling (fraction <= 1 or whole count > 1); ``ValueError`` says what is wrong."""
    spelled = str(text).strip()
    try:
        value = float(spelled[:-1]) / 100 if spelled.endswith("%") else float(spelled)
    except ValueError:
        raise ValueError(f"{spelled!r} is not a number; write a fraction (0.25 or 25%) or a whole count (32)") from None
    if not math.isfinite(value) or value <= 0 or (spelled.endswith("%") and value > 1):
        raise ValueError(f"{spelled!r}: expected a fraction in (0, 1] (0.25 or 25%) or a whole count of slots (32)")
    if value > 1 and value != int(value):
        raise ValueError(f"{spelled!r} is neither a fraction <= 1 nor a whole count of slots; write e.g. "
                         f"{math.floor(value)} or {math.ceil(value)} slots, or a fraction like 0.25")
    return value


def kept_slots(keep: float, slots: int, flag: str = "--keep") -> int:
    """Experts of a layer with ``slots`` Hugging Face experts (routed + shared) that ``keep`` (see ``parse_keep``)
    keeps; errors name ``flag``."""
    try:
        keep = parse_keep(keep)
    except ValueError as error:
        raise ConversionError(f"{flag} {error}") from None
    if keep <= 1:
        return round(keep * slots)
    if keep > slots:
        raise ConversionError(f"{flag} {keep:g}: the layer has only {slots} expert slots (use {slots} or 100% for all)")
    return int(keep)


def keep_argument(text: str) -> float:
    """argparse ``type`` for --keep: fraction or count."""
    try:
        return parse_keep(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def fraction_argument(text: str) -> float:
    """argparse ``type`` for --fractions: like --keep, but only fractions (a count is select_experts' business)."""
    value = keep_argument(text)
    if value > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a count of slots; --fractions takes fractions <= 1 (0.25 or 25%)"
        )
    return value
