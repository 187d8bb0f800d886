"""Fixtures of the analysis tests: one tiny checkpoint per session, and single-threaded torch for every test
(both defined in tiny_checkpoint.py, shared with the tests of the commands in tests/cli)."""

import pytest

from tests.evaluation.analysis.tiny_checkpoint import single_threaded_torch, tiny_checkpoint  # noqa: F401


@pytest.fixture(autouse=True)
def every_test_single_threaded(single_threaded_torch):  # noqa: F811
    """single_threaded_torch for every test here."""
