"""export_to_hf with nothing but the checkpoint: bf16 tensors, and the tokenizer the importer leaves in the
iteration folder is found, copied and shown in the model card's usage example."""

import shutil

import torch
from safetensors import safe_open

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
