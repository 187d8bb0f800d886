"""The task-prompt calibration options ``emo-select-experts`` and ``emo-evaluate-subsets`` share, so their
spelling, defaults and help stay the same (format: ``emo_plugin/evaluation/selection/task_prompts.py``)."""

from __future__ import annotations

import argparse

from emo_plugin.evaluation.selection.task_prompts import DEFAULT_TEMPLATE


def num_examples_argument(text: str) -> int | None:
    """argparse ``type`` for --num-examples: a count >= 1, or ``all`` (None)."""
    if text.strip().lower() == "all":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of prompts >= 1 or 'all'")
    return int(text)


def template_argument(text: str) -> str:
    """argparse ``type`` for --template: ``\\n`` and ``\\t`` typed in a shell become a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def add_prompt_format(parser: argparse.ArgumentParser) -> None:
    """How the records of --task-prompts become k-shot prompts (the command adds --task-prompts itself)."""
    parser.add_argument(
        "--template",
        type=template_argument,
        default=DEFAULT_TEMPLATE,
        help="how a record becomes text: {field} placeholders, the answer field exactly once; \\n is a newline "
        "(default: %(default)r)",
    )
    parser.add_argument(
        "--answer-field", default="answer", help="the record field of the answer (default: %(default)s)"
    )
    parser.add_argument(
        "--num-shots",
        type=int,
        default=5,
        help="solved examples before each query: the first records of the task (default: %(default)s; the paper "
        "uses 5, 8 for GSM8K)",
    )
    parser.add_argument(
        "--num-examples",
        type=num_examples_argument,
        default=8,
        help="calibration prompts (queries) after the shots: a count or 'all' (default: %(default)s; the paper "
        "finds one is already enough)",
    )
