"""One rule for --keep (select_experts) and --fractions (evaluate_subsets): <= 1 is a fraction, > 1 a whole count.
(The commands' parsers: tests/cli/test_select_experts.py and tests/cli/test_evaluate_subsets.py.)"""

from __future__ import annotations

import argparse

import pytest

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection.keep import fraction_argument, keep_argument, kept_slots
from tests.reliability import record


@pytest.mark.parametrize("text, slots, expected", [
    ("0.25", 16, 4), ("25%", 16, 4), ("1", 16, 16), ("1.0", 16, 16), ("100%", 16, 16), ("12", 16, 12),
    ("0.125", 128, 16), ("32", 128, 32),
])
def test_spellings(text, slots, expected):
    assert kept_slots(keep_argument(text), slots) == expected


def test_count_above_the_slots_is_refused_not_clamped():
    expected = r"--keep 100: the layer has only 16 expert slots \(use 16 or 100% for all\)"
    with pytest.raises(ConversionError, match=expected) as info:
        kept_slots(100.0, 16)
    record("select_experts --keep 100 (16 slots per layer)", seen=f"error: {info.value}",
           kept="nothing written", area="selection")


def test_fractions_refuse_counts():
    with pytest.raises(argparse.ArgumentTypeError, match="'32' is a count of slots; --fractions takes fractions"):
        fraction_argument("32")
