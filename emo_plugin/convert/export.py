"""Megatron dist checkpoint (any TP/EP/PP layout) → EMO Hugging Face folder, streamed tensor by tensor.

Each unit of the weight map (convert/weight_map.py: a layer's attention, one expert of one layer, ...) is one
slice of one global Megatron tensor, read straight from the torch_dist files, split into its HF tensors, cast
to the export dtype and appended to the current safetensors shard; peak memory stays near one slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from emo_plugin.convert import weight_map
from emo_plugin.convert.checkpoint_config import record_of
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.convert.hf_config import hf_config_kwargs
from emo_plugin.convert.hf_files import copy_modeling_code, write_config
from emo_plugin.convert.model_card import training_settings, write_model_card
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.convert.safetensors_writer import ShardedSafetensorsWriter, parse_size
from emo_plugin.convert.tokenizer_export import write_tokenizer
from emo_plugin.dtypes import DTYPES
from emo_plugin.errors import ConversionError
from emo_plugin.model.record import ModelRecord


def hf_tensors(reader: DistCheckpointReader, record: ModelRecord) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) pairs in weight-map order, each unit's slice read on demand (inert experts skipped)."""
    for unit in weight_map.units(record):
        if unit.hf_names:
            tensors = unit.row.layout.split(reader.read(unit.row.megatron, *unit.index), record, unit.slots)
            yield from zip(unit.hf_names, tensors)


def tokenizer_next_to(iteration_dir: Path) -> Path | None:
    """The ``tokenizer.model`` the importer copies next to the iteration folders, if any."""
    for candidate in (iteration_dir / "tokenizer.model", iteration_dir.parent / "tokenizer.model"):
        if candidate.is_file():
            return candidate
    return None


def tensor_count(record: ModelRecord) -> int:
    return sum(len(unit.hf_names) for unit in weight_map.units(record))


def inference_pool_size(choice: str | int | None, run: dict | None, record: ModelRecord) -> int | None:
    """The HF ``emo_inference_pool_size`` to write: ``off``/None (plain top-k, the default), ``training`` (the
    run's ``emo.pool_eval``, the pools its validation used) or a number of routed experts."""
    if choice in (None, "off"):
        return None
    if choice == "training":
        if run is None:
            raise ConversionError("--inference-pool-size=training: the checkpoint stores no training config (e.g. "
                                  "emo-import-hf output), so its emo.pool_eval is unknown; pass a number")
        pool = record.pool_eval
    else:
        try:
            pool = int(choice)
        except ValueError:
            raise ConversionError(f"--inference-pool-size={choice}: expected off, training or a number of routed "
                                  "experts") from None
    if pool < record.moe_router_topk:
        raise ConversionError(f"--inference-pool-size={choice}: a pool of {pool} experts is smaller than the "
                              f"{record.moe_router_topk} routed experts each token needs")
    return pool


def export_to_hf(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dtype: str = "bf16",
    inference_pool: str | int | None = None,
    max_shard_size: str | int = "5GB",
    tokenizer: str | Path | None = None,
    model_config: str | Path | None = None,
    key_prefix: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the HF folder; returns a summary (model record, bytes, parameters, shards)."""
    reader = DistCheckpointReader(checkpoint, key_prefix)
    record, stored_tokenizer = record_of(reader, model_config)
    tokenizer = tokenizer or stored_tokenizer or tokenizer_next_to(reader.path)
    torch_dtype = DTYPES[dtype]
    from emo_plugin.hf import EmoConfig

    run = reader.common_state().get("config")
    pool = inference_pool_size(inference_pool, run, record)
    config = EmoConfig(**hf_config_kwargs(record), emo_inference_pool_size=pool)
    with atomic_output_dir(output, force, inputs=(checkpoint, tokenizer, model_config)) as folder:
        writer = ShardedSafetensorsWriter(folder, parse_size(max_shard_size))
        for name, tensor in tqdm(
            hf_tensors(reader, record), total=tensor_count(record), desc="export", unit="tensor", disable=not progress
        ):
            writer.add(name, tensor.to(torch_dtype))
        index = writer.close()
        values = write_config(folder, config, torch_dtype)
        copy_modeling_code(folder)
        if tokenizer:
            write_tokenizer(tokenizer, folder)
        training = training_settings(run, record) if isinstance(run, dict) else None
        write_model_card(folder, values, training, index["metadata"]["total_parameters"], bool(tokenizer))
    return {
        "source": str(reader.path),
        "output": str(output),
        "model": record.to_dict(),
        "bytes": index["metadata"]["total_size"],
        "parameters": index["metadata"]["total_parameters"],
        "shards": len(set(index["weight_map"].values())),
        "tokenizer": str(tokenizer) if tokenizer else None,
    }
