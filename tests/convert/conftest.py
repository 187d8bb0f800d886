"""Fixtures: one random tiny Megatron model, its 1-rank dist checkpoint and its HF export (fp32)."""

import pytest
import torch

from tests.convert.checkpoint_workers import TINY, random_model

TOKENIZER = "examples/data/tokenizer.model"


@pytest.fixture(scope="session")
def megatron_model(megatron_single_rank):
    return random_model()


@pytest.fixture(scope="session")
def dist_checkpoint(megatron_model, tmp_path_factory):
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.record import RECORD_KEY

    root = tmp_path_factory.mktemp("megatron") / "ckpt"
    state = {"model": megatron_model.sharded_state_dict(prefix=""), RECORD_KEY: TINY.to_dict()}
    checkpoint.save(root, 3, state, HostTorchDistSaveStrategy())
    return root


@pytest.fixture(scope="session")
def hf_folder(dist_checkpoint, tmp_path_factory):
    from emo_plugin.convert import export_to_hf

    out = tmp_path_factory.mktemp("hf") / "emo"
    export_to_hf(dist_checkpoint, out, dtype="fp32", tokenizer=TOKENIZER, max_shard_size="40KB", progress=False)
    return out


@pytest.fixture(scope="session")
def hf_model(hf_folder):
    from emo_plugin.hf import EmoForCausalLM

    return EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
