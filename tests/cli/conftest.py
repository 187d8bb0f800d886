"""Fixtures of the tests of the analysis commands (emo-evaluate-subsets, emo-exclude-experts): the tiny checkpoint
of tests/evaluation/analysis, and single-threaded torch (see tests/evaluation/analysis/conftest.py). Not autouse:
the other command tests here do not need them."""

import pytest
import torch

from tests.evaluation.analysis.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture
def single_threaded_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint dir, labelled corpus, tokenizer .model) written once for all tests."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("analysis"))
