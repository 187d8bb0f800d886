"""Lazy, shape-checked access to the tensors of a Hugging Face safetensors folder (sharded or not).

Every shard is opened once up front: a missing or truncated file, an unreadable index, or an index naming
tensors that its shard does not hold is reported with the file's name before any conversion work starts
(safetensors checks that the data of every tensor in a shard's header lies inside the file).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from emo_plugin.errors import ConversionError, shape_error

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ConversionError(
            f"{index}: not a valid safetensors index ({type(error).__name__}: {error}); expected JSON with a "
            "'weight_map' of tensor name → shard file; re-copy or re-export the checkpoint"
        ) from None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ConversionError(f"{index}: 'weight_map' must map tensor names to shard file names")
    return weight_map


def _shard_names(path: Path) -> set[str]:
    """Tensor names in one shard; refuses a missing, truncated or otherwise unreadable file by name."""
    if not path.is_file():
        raise ConversionError(
            f"{path}: shard file is missing (listed in {INDEX_NAME}); copy every model-*.safetensors file"
        )
    try:
        with safe_open(path, "pt") as f:
            return set(f.keys())
    except (SafetensorError, OSError) as error:
        raise ConversionError(
            f"{path}: unreadable safetensors shard ({error}; {path.stat().st_size} bytes on disk) - the file is "
            "probably truncated by an interrupted copy or download; copy it again"
        ) from None


class HfWeights:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if (self.folder / INDEX_NAME).is_file():
            self.files = _read_index(self.folder / INDEX_NAME)
        elif (self.folder / SINGLE_NAME).is_file():
            self.files = {name: SINGLE_NAME for name in _shard_names(self.folder / SINGLE_NAME)}
        else:
            raise ConversionError(f"{self.folder}: no {SINGLE_NAME} or {INDEX_NAME}")
        for file in sorted(set(self.files.values())):
            held = _shard_names(self.folder / file)
            missing = sorted(n for n, f in self.files.items() if f == file and n not in held)
            if missing:
                raise ConversionError(
                    f"{self.folder / file}: {len(missing)} tensor(s) that {INDEX_NAME} places in this shard are not "
                    f"in it (first: {missing[0]!r}); the index and the shards come from different exports"
                )
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
