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
