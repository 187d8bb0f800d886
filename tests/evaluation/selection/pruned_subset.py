"""The expert subset the re-insertion tests put back: SELECTION pruned out of the tiny HF folder (fixture
``pruned``, registered by the conftest.py of tests/evaluation/selection and tests/cli), and helpers that read and
rewrite a folder's tensors by their HF names. Used by tests/evaluation/selection/test_reinsert.py (the library)
and tests/cli/test_reinsert_experts.py (the command)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from emo_plugin.evaluation.selection import write_pruned_checkpoint

SELECTION = {0: [6, 1, 4], 1: [7, 0, 3]}  # unsorted on purpose: pruning orders the kept experts ascending


def tensors(folder) -> dict[str, torch.Tensor]:
    return {name: t for file in sorted(folder.glob("*.safetensors")) for name, t in load_file(file).items()}


def rewrite(folder, change) -> None:
    """Replace every tensor of the folder's shards by ``change(name, tensor)`` (a tensor, or None to drop it)."""
    for file in folder.glob("*.safetensors"):
        changed = {name: change(name, t) for name, t in load_file(file).items()}
        save_file({n: t for n, t in changed.items() if t is not None}, file, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        record = json.loads(index.read_text())
        record["weight_map"] = {n: f for n, f in record["weight_map"].items() if n in tensors(folder)}
        index.write_text(json.dumps(record))


def expert(layer: int, slot: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.experts.{slot}.{proj}.weight"


@pytest.fixture
def pruned(hf_folder, tmp_path):
    write_pruned_checkpoint(hf_folder, tmp_path / "pruned", SELECTION)
    return tmp_path / "pruned"
