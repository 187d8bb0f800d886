"""Megatron-LM's argument parsing in the test process: its process globals are unset after every test."""

import pytest


@pytest.fixture
def megatron_lm_globals(monkeypatch):
    """One rank, as Megatron-LM's validate_args reads it from the launch environment; globals unset afterwards."""
    from megatron.training.global_vars import unset_global_variables

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    yield
    unset_global_variables()
