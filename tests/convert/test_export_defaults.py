"""export_to_hf with nothing but the checkpoint: bf16 tensors, the tokenizer the importer leaves in the iteration
folder is found, copied and shown in the model card's usage example, and the HF model routes plain top-k unless
an inference pool is asked for."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from tests.convert.checkpoint_workers import TINY
from tests.convert.conftest import TOKENIZER


def test_export_defaults_to_bf16_and_finds_the_tokenizer_in_the_iteration_folder(dist_checkpoint, tmp_path):
    from emo_plugin.convert import export_to_hf

    checkpoint = shutil.copytree(dist_checkpoint, tmp_path / "ckpt")
    (iteration,) = [p for p in checkpoint.iterdir() if p.is_dir()]
    shutil.copy(TOKENIZER, iteration / "tokenizer.model")
    summary = export_to_hf(iteration, tmp_path / "hf", progress=False)

    assert summary["tokenizer"] == str(iteration / "tokenizer.model")
    assert (tmp_path / "hf" / "tokenizer.model").read_bytes() == (iteration / "tokenizer.model").read_bytes()
    assert 'AutoTokenizer.from_pretrained("<this folder>"' in (tmp_path / "hf" / "README.md").read_text()
    dtypes = set()
    for shard in (tmp_path / "hf").glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            dtypes |= {f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes == {"BF16"}
    assert torch.bfloat16.itemsize * summary["parameters"] == summary["bytes"]


def _pool_in_config(folder) -> int | None:
    return json.loads((folder / "config.json").read_text())["emo_inference_pool_size"]


def test_export_routes_plain_top_k_unless_asked_for_the_training_pool(megatron_model, dist_checkpoint, tmp_path):
    """Default off (plain top-k, as the paper evaluates); ``training`` writes the run's emo.pool_eval; N writes N.
    The model card of an anneal run describes its anneal."""
    from emo_plugin import checkpoint
    from emo_plugin.convert import ConversionError, export_to_hf
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.record import RECORD_KEY
    from emo_plugin.run.config import TrainingConfig, to_dict

    export_to_hf(dist_checkpoint, tmp_path / "off", progress=False)
    assert _pool_in_config(tmp_path / "off") is None
    export_to_hf(dist_checkpoint, tmp_path / "n", inference_pool="3", progress=False)
    assert _pool_in_config(tmp_path / "n") == 3
    with pytest.raises(ConversionError, match="--inference-pool-size=training: the checkpoint stores no training"):
        export_to_hf(dist_checkpoint, tmp_path / "none", inference_pool="training", progress=False)
    with pytest.raises(ConversionError, match="--inference-pool-size=1: a pool of 1 experts is smaller than the 2"):
        export_to_hf(dist_checkpoint, tmp_path / "small", inference_pool=1, progress=False)
    with pytest.raises(ConversionError, match="--inference-pool-size=all: expected off, training or a number"):
        export_to_hf(dist_checkpoint, tmp_path / "bad", inference_pool="all", progress=False)

    run = TrainingConfig()
    run.emo.pool_eval = 5
    run.schedule.anneal_iters = 4
    trained = tmp_path / "trained"
    checkpoint.save(trained, 3, {"model": megatron_model.sharded_state_dict(prefix=""),
                                 RECORD_KEY: dataclasses.replace(TINY, pool_eval=5).to_dict(), "config": to_dict(run)},
                    HostTorchDistSaveStrategy())
    export_to_hf(trained, tmp_path / "training", inference_pool="training", progress=False)
    assert _pool_in_config(tmp_path / "training") == 5
    assert "anneal: linear over the last 4 steps from the loaded checkpoint's lr to 0.0" in \
        (tmp_path / "training" / "README.md").read_text()


def test_inference_pool_size_accepts_a_pool_of_top_k_and_explains_every_refusal():
    """The choice is checked before anything is read; each refusal says what was asked and what would work."""
    from emo_plugin.convert import ConversionError
    from emo_plugin.convert.export import inference_pool_size

    top_k = TINY.moe_router_topk
    assert inference_pool_size(str(top_k), None, TINY) == top_k  # the smallest pool a token can route in
    refusals = {
        "training": "--inference-pool-size=training: the checkpoint stores no training config (e.g. emo-import-hf "
                    "output), so its emo.pool_eval is unknown; pass a number",
        "all": "--inference-pool-size=all: expected off, training or a number of routed experts",
        top_k - 1: f"--inference-pool-size={top_k - 1}: a pool of {top_k - 1} experts is smaller than the {top_k} "
                   "routed experts each token needs",
    }
    for choice, message in refusals.items():
        with pytest.raises(ConversionError) as refused:
            inference_pool_size(choice, None, TINY)
        assert str(refused.value) == message
