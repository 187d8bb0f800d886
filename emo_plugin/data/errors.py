"""The one exception type the data pipeline raises for bad inputs.

Why a dedicated type: CLIs turn it into a one-line ``error: ...`` message (no traceback), and
tests can tell "the input is wrong" apart from bugs. Messages name the file (and line / field)
and say what was expected.
"""


class DataError(ValueError):
    """An input file, record or tokenizer does not satisfy what the data pipeline expects."""
