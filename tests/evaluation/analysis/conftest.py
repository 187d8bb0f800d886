"""Fixtures of the analysis tests: one tiny checkpoint per session, and single-threaded torch.

One thread: the models are tiny, and on a shared CPU torch's thread pool is 10-100x slower than one thread.
"""

import pytest
import torch

from tests.evaluation.analysis.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(autouse=True)
def single_threaded_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint dir, labelled corpus, tokenizer .model) written once for all tests."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("analysis"))
