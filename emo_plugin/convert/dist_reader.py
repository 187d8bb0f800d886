"""Read a Megatron torch_dist checkpoint tensor by tensor (slice by slice), without CUDA or a process group.

Megatron's ``sharded_state_dict()`` stores every tensor under a *global* key in a layout-independent form:
transformer layers are stacked on a leading axis (``decoder.layers.X`` has shape ``[num_layers, ...]``),
experts on a second one (``[num_layers, num_experts, ...]``), TP shards are pieces of one global tensor and
the TE and local specs use the same keys. Whatever TP/EP/PP layout wrote the checkpoint, each rank's piece is
a *chunk* of that global tensor. This reader goes straight to PyTorch DCP's ``FileSystemReader`` and loads
only the chunks that overlap the requested slice, so peak memory stays near one slice (one expert of one
layer), not one global tensor (all experts of all layers).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

from emo_plugin.errors import ConversionError

LATEST_FILES = ("latest_checkpointed_iteration.txt", "latest")
ANCHOR_KEY = "embedding.word_embeddings.weight"


def resolve_iteration_dir(path: str | Path) -> Path:
    """The dist-checkpoint folder: ``path`` itself, or the iteration its ``latest`` file names."""
    path = Path(path)
    if (path / ".metadata").is_file():
        return path
    for name in LATEST_FILES:
        latest = path / name
        if latest.is_file():
            text = latest.read_text().strip()
            iteration_dir = path / (f"iter_{int(text):07d}" if text.isdigit() else text)
            if (iteration_dir / ".metadata").is_file():
                return iteration_dir
            raise ConversionError(f"{latest} names {iteration_dir}, which holds no complete torch_dist checkpoint")
    iterations = sorted(path.glob("iter_*[0-9]"))
    if iterations and (iterations[-1] / ".metadata").is_file():
        return iterations[-1]
    raise ConversionError(f"{path}: no torch_dist checkpoint (.metadata), latest file or iter_* folder")


class _SliceTarget:
    """The minimal LoadPlanner interface FileSystemReader.read_data calls: where each chunk piece goes."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def resolve_tensor(self, item: ReadItem) -> torch.Tensor:
        view = self.out
        for dim, (start, length) in enumerate(zip(item.dest_offsets, item.lengths)):
            view = view.narrow(dim, start, length)
        return view

    def commit_tensor(self, item: ReadItem, tensor: torch.Tensor) -> None:
        pass


class DistCheckpointReader:
    """Global shapes, dtypes and slices of the model tensors of one torch_dist checkpoint folder."""

    def __init__(self, path: str | Path, key_prefix: str | None = None):
        self.path = resolve_iteration_dir(path)
        self._reader = FileSystemReader(str(self.path))
        self.metadata = self._reader.read_metadata()
        self._reader.set_up_storage_reader(self.metadata, is_coordinator=True)
        self.tensors = {
            k: v for k, v in self.metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)
        }
        self.prefix = self._find_prefix() if key_prefix is None else key_prefix

    def _find_prefix(self) -> str:
        """The prefix in front of the model keys (``""`` for emo_plugin's trainer); optimizer keys are skipped."""
        candidates = [k for k in self.tensors if k.endswith(ANCHOR_KEY) and "optimizer" not in k]
        if not candidates:
            raise ConversionError(f"{self.path}: no model tensor named '*{ANCHOR_KEY}' in the checkpoint")
        return min(candidates, key=len)[: -len(ANCHOR_KEY)]

    def common_state(self) -> dict:
        """Megatron's non-tensor state (iteration, the run's config, ...): the ``common_state`` object inside
        the torch_dist files (megatron-core 0.19), or a legacy ``common.pt``."""
        from megatron.core.dist_checkpointing import load_common_state_dict

        return load_common_state_dict(str(self.path)) or {}

    def has(self, key: str) -> bool:
        return self.prefix + key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._meta(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._meta(key).properties.dtype

    def _meta(self, key: str) -> TensorStorageMetadata:
        try:
            return self.tensors[self.prefix + key]
        except KeyError:
            raise ConversionError(f"{self.path}: checkpoint has no tensor {self.prefix + key!r}") from None

    def read(self, key: str, *index: int) -> torch.Tensor:
        """``global_tensor[index]`` for leading integer indices (e.g. layer, expert), read chunk by chunk."""
        meta = self._meta(key)
        full = tuple(meta.size)
        if len(index) > len(full) or any(not 0 <= i < n for i, n in zip(index, full)):
            raise ConversionError(f"{self.prefix + key}: index {index} out of range for global shape {full}")
        start = tuple(index) + (0,) * (len(full) - len(index))
        size = (1,) * len(index) + full[len(index) :]
        out = torch.empty(size, dtype=meta.properties.dtype)
        items, covered = [], 0
        fqn = self.prefix + key
        for chunk_index, chunk in enumerate(meta.chunks):
            lo = [max(s, o) for s, o in zip(start, chunk.offsets)]
            hi = [min(s + n, o + c) for s, n, o, c in zip(start, size, chunk.offsets, chunk.sizes)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            lengths = [h - low for low, h in zip(lo, hi)]
            items.append(
                ReadItem(
                    type=LoadItemType.TENSOR,
                    dest_index=MetadataIndex(fqn, torch.Size(start)),
                    dest_offsets=torch.Size([low - s for low, s in zip(lo, start)]),
                    storage_index=MetadataIndex(fqn, torch.Size(chunk.offsets), chunk_index),
                    storage_offsets=torch.Size([low - o for low, o in zip(lo, chunk.offsets)]),
                    lengths=torch.Size(lengths),
                )
            )
            covered += torch.Size(lengths).numel()
        if covered != out.numel():
            raise ConversionError(f"{fqn}: chunks cover {covered} of {out.numel()} elements of slice {index}")
        self._reader.read_data(LoadPlan(items), _SliceTarget(out)).wait()
        return out.reshape(full[len(index) :])
