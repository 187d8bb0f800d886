"""The one error type of the analysis tools, so the CLIs can print it without a traceback."""


class AnalysisError(ValueError):
    """A problem with the user's inputs (file, field, flag); the message names what is wrong and where."""
