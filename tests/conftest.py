"""Shared fixtures: a one-rank gloo process group with Megatron's parallel state, for in-process tests, and the
bundled corpus tokenised once per session."""

import os
from pathlib import Path

import pytest
import torch

from emo_plugin.free_port import free_port


@pytest.fixture(scope="session")
def megatron_single_rank():
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(free_port())
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)
    yield


@pytest.fixture(scope="session")
def corpus_prefix(tmp_path_factory) -> str:
    """examples/data/corpus.jsonl as a Megatron indexed dataset (``<prefix>.bin/.idx``) with the bundled tokenizer."""
    from emo_plugin.data.preprocess import preprocess_jsonl

    repo = Path(__file__).resolve().parents[1]
    prefix = tmp_path_factory.mktemp("data") / "corpus_text_document"
    preprocess_jsonl([repo / "examples/data/corpus.jsonl"], repo / "examples/data/tokenizer.model", prefix,
                     progress=False)
    return str(prefix)


@pytest.fixture(autouse=True)
def fresh_moe_metrics():
    """Megatron's metrics tracker is process-global and sized by the first model's layer count."""
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    get_moe_metrics_tracker().metrics.clear()
    yield


@pytest.fixture
def megatron_lm_globals(monkeypatch):
    """Megatron-LM's argument parsing in the test process (tests/megatron_lm, emo-pretrain-megatron's CLI tests):
    one rank, as Megatron-LM's validate_args reads it from the launch environment; its globals unset afterwards."""
    from megatron.training.global_vars import unset_global_variables

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    yield
    unset_global_variables()
