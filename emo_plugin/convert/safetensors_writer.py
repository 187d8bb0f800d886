"""Stream tensors into size-capped safetensors shards plus ``model.safetensors.index.json``.

Tensors are appended one at a time and a shard is flushed to disk as soon as adding the next tensor would
pass ``max_shard_bytes``, so host memory holds at most about one shard. Shard names need the final count
(``model-00001-of-00003.safetensors``), so shards are renamed when the writer closes. safetensors writes
through a private temporary file (mode 0600); shards get the mode of any file the user creates (0666 minus the
umask), like the other files of the folder, so a shared model folder is readable by the group as usual.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

INDEX_NAME = "model.safetensors.index.json"


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot parse size {text!r}; use e.g. 5GB, 500MB or a byte count")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


def default_file_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class ShardedSafetensorsWriter:
    def __init__(self, folder: Path, max_shard_bytes: int):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self.current: dict[str, torch.Tensor] = {}
        self.current_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0
        self.total_params = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.current and self.current_bytes + size > self.max_shard_bytes:
            self._flush()
        self.current[name] = tensor.detach().contiguous().clone()
        self.current_bytes += size
        self.total_bytes += size
        self.total_params += tensor.numel()

    def _flush(self) -> None:
        path = self.folder / f"shard-{len(self.shards):05d}.tmp"
        save_file(self.current, str(path), metadata={"format": "pt"})
        os.chmod(path, default_file_mode())
        self.shards.append(list(self.current))
        self.current, self.current_bytes = {}, 0

    def close(self) -> dict:
        """Flush, name the shards, write the index; returns the index."""
        if self.current or not self.shards:
            self._flush()
        count = len(self.shards)
        weight_map = {}
        for i, names in enumerate(self.shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            (self.folder / f"shard-{i:05d}.tmp").rename(self.folder / final)
            weight_map.update({name: final for name in names})
        metadata = {"total_size": self.total_bytes, "total_parameters": self.total_params}
        index = {"metadata": metadata, "weight_map": weight_map}
        (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return index
