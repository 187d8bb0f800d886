"""The package's one error hierarchy: every problem with the user's input is an ``EmoError``.

Why one base: the command-line tools (``emo_plugin/cli/runner.py``) turn any ``EmoError`` into a one-line
message and exit code 2 without a traceback, while anything else stays a bug with its traceback. The base is a
``ValueError`` so callers that catch ``ValueError`` keep working. Messages name the file or field, the value
and what was expected; the subclass only says which stage refused the input.
"""


class EmoError(ValueError):
    """Input this package cannot work with; the message names where (file, line, field) and what was expected."""

    kind = "input"
    """The stage that refused the input, as the one-line report names it (``emo-pretrain: config error: ...``)."""


class ConfigError(EmoError):
    """A training or model configuration value that cannot work (``section.field=value: expected ...``)."""

    kind = "config"


class DataError(EmoError):
    """An input file, record or tokenizer does not satisfy what the data pipeline expects."""

    kind = "data"


class ConversionError(EmoError):
    """A checkpoint that cannot be converted as asked (wrong shape, missing tensor, refused output folder)."""

    kind = "conversion"


class AnalysisError(EmoError):
    """An analysis or expert-selection input (file, field, flag) that the evaluation tools cannot use."""

    kind = "analysis"


def shape_error(what: str, name: str, expected, actual) -> ConversionError:
    """The converters' message for a tensor of the wrong shape: the checkpoint, the tensor and both shapes."""
    return ConversionError(f"{what}: tensor {name!r} has shape {tuple(actual)}, expected {tuple(expected)}")
