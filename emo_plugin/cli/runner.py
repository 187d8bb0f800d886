"""The pattern every command-line tool shares: a documented parser, and one place that reports input errors.

Why one place: a user's mistake (a missing file, a bad field, a refused output folder) is an ``EmoError`` from
``emo_plugin/errors.py``; the tools print its message on one line and exit with ``CONFIG_ERROR`` (2), the code
``emo-pretrain`` uses for bad config or input (``emo_plugin/run/exit_codes.py``). Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from emo_plugin.errors import EmoError
from emo_plugin.run.exit_codes import CONFIG_ERROR, FINISHED


def documented_parser(doc: str, prog: str) -> argparse.ArgumentParser:
    """A parser whose ``--help`` is the tool's module docstring: first paragraph on top, the rest (examples) below.

    ``prog`` is the console-script name, so usage lines match what the user types whichever way it was started.
    """
    summary, _, details = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog, description=summary, epilog=details or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def run_command(
    parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None], argv: list[str] | None
) -> int:
    """Parse ``argv`` and run ``body``; an ``EmoError`` becomes a one-line report and exit code 2."""
    args = parser.parse_args(argv)
    try:
        code = body(args)
    except EmoError as error:
        return report_input_error(parser.prog, error)
    return FINISHED if code is None else code


def report_input_error(prog: str, error: EmoError) -> int:
    """Print ``<prog>: <kind> error: <message>`` on one line and return the exit code of bad input (2)."""
    print(f"{prog}: {error.kind} error: {error}", file=sys.stderr)
    return CONFIG_ERROR
