"""An exported tiny EMO HF folder (random weights, real tokenizer), the model loaded from it, and calibration
documents: fixtures of the selection tests (tests/evaluation/selection) and of the selection commands' tests
(tests/cli), defined here once and registered by their conftest.py."""

import dataclasses

import pytest
import torch

TOKENIZER = "examples/data/tokenizer.model"


@pytest.fixture(scope="session")
def hf_folder(megatron_single_rank, tmp_path_factory):
    from emo_plugin import checkpoint
    from emo_plugin.convert import export_to_hf
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.record import RECORD_KEY
    from tests.convert.checkpoint_workers import TINY, random_model

    arch = dataclasses.replace(TINY, vocab_size=4096)  # the real tokenizer's vocabulary, for the CLI test
    root = tmp_path_factory.mktemp("selection")
    state = {"model": random_model(arch).sharded_state_dict(prefix=""), RECORD_KEY: arch.to_dict()}
    checkpoint.save(root / "ckpt", 1, state, HostTorchDistSaveStrategy())
    export_to_hf(root / "ckpt", root / "hf", dtype="fp32", tokenizer=TOKENIZER, progress=False)
    return root / "hf"


@pytest.fixture(scope="session")
def documents_file(tmp_path_factory):
    """Five corpus documents: the 'task' examples."""
    lines = open("examples/data/corpus.jsonl").read().splitlines()[:5]
    path = tmp_path_factory.mktemp("docs") / "task.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def model(hf_folder):
    from emo_plugin.hf import EmoForCausalLM

    return EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
