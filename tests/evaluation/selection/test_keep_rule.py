"""One rule for --keep (select_experts) and --fractions (evaluate_subsets): <= 1 is a fraction, > 1 a whole count."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection.keep import fraction_argument, keep_argument, kept_slots
from tests.data.helpers import cli_module
from tests.reliability import record


@pytest.mark.parametrize("text, slots, expected", [
    ("0.25", 16, 4), ("25%", 16, 4), ("1", 16, 16), ("1.0", 16, 16), ("100%", 16, 16), ("12", 16, 12),
    ("0.125", 128, 16), ("32", 128, 32),
])
def test_spellings(text, slots, expected):
    assert kept_slots(keep_argument(text), slots) == expected


def test_both_tools_read_one_point_zero_as_every_slot():
    evaluate = cli_module("evaluate_subsets").build_parser()
    assert evaluate.parse_args(["--checkpoint", "c", "--corpus", "x", "--out", "o", "--fractions", "1.0", "0.25"]
                               ).fractions == [1.0, 0.25]
    assert kept_slots(keep_argument("1.0"), 16) == kept_slots(fraction_argument("1.0"), 16) == 16


@pytest.mark.parametrize("argv, expected, case", [
    (["--keep", "1.5"], "'1.5' is neither a fraction <= 1 nor a whole count of slots; write e.g. 1 or 2 slots",
     "select_experts --keep 1.5"),
    (["--keep", "0"], "'0': expected a fraction in (0, 1]", "select_experts --keep 0"),
    (["--keep", "150%"], "'150%': expected a fraction in (0, 1]", "select_experts --keep 150%"),
])
def test_select_experts_refuses_ambiguous_keep(argv, expected, case, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli_module("select_experts").main(["--model", str(tmp_path), "--documents", "d.jsonl",
                                          "--selection-json", str(tmp_path / "s.json"), *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err and "Traceback" not in err
    # argparse names the program after sys.argv[0] (pytest here); the user sees the tool's name
    seen = err.strip().splitlines()[-1].replace(f"{Path(sys.argv[0]).name}:", "select_experts.py:", 1)
    record(case, seen=seen, kept="nothing written", area="selection")


def test_count_above_the_slots_is_refused_not_clamped():
    expected = r"--keep 100: the layer has only 16 expert slots \(use 16 or 100% for all\)"
    with pytest.raises(ConversionError, match=expected) as info:
        kept_slots(100.0, 16)
    record("select_experts --keep 100 (16 slots per layer)", seen=f"error: {info.value}",
           kept="nothing written", area="selection")


def test_fractions_refuse_counts():
    with pytest.raises(argparse.ArgumentTypeError, match="'32' is a count of slots; --fractions takes fractions"):
        fraction_argument("32")
