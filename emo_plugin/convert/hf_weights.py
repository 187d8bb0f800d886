"""Lazy, shape-checked access to the tensors of a Hugging Face safetensors folder (sharded or not)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from emo_plugin.convert.errors import ConversionError, shape_error


class HfWeights:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            self.files = json.loads(index.read_text())["weight_map"]
        elif (self.folder / "model.safetensors").is_file():
            with safe_open(self.folder / "model.safetensors", "pt") as f:
                self.files = {name: "model.safetensors" for name in f.keys()}
        else:
            raise ConversionError(f"{self.folder}: no model.safetensors or model.safetensors.index.json")
        self._open = {}

    def names(self) -> list[str]:
        return list(self.files)

    def get(self, name: str, expected_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if name not in self.files:
            raise ConversionError(f"{self.folder}: checkpoint has no tensor {name!r}")
        file = self.files[name]
        if file not in self._open:
            self._open[file] = safe_open(self.folder / file, "pt")
        tensor = self._open[file].get_tensor(name)
        if expected_shape is not None and tuple(tensor.shape) != tuple(expected_shape):
            raise shape_error(str(self.folder), name, expected_shape, tensor.shape)
        return tensor
