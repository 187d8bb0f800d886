"""EMO Hugging Face folder (AI2 layout) → Megatron dist checkpoint loadable under any TP/EP/PP.

The HF tensors fill a 1-rank host Megatron model, which is saved with ``dist_checkpointing`` (torch_dist,
synchronous host writer) in the trainer's folder layout (``iter_0000000`` + ``latest_checkpointed_iteration
.txt``); Megatron reshards it on load. When the target expert-parallel size does not divide the routed experts
(AI2: 127 routed + 1 shared), trailing *inert* experts with zero weights pad the count; the EMO router never
selects them (``emo.num_inert_experts``) and the exporter drops them again. The common state holds the model
record (``emo_plugin.model.record.RECORD_KEY``) so export needs no separate config.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from emo_plugin.convert import weight_map
from emo_plugin.convert.hf_config import record_from_hf_config
from emo_plugin.convert.hf_weights import HfWeights
from emo_plugin.convert.megatron_host import build_host_model
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.dtypes import DTYPES
from emo_plugin.errors import ConversionError, shape_error
from emo_plugin.model.record import RECORD_KEY, ModelRecord


def read_hf_record(folder: str | Path) -> ModelRecord:
    from emo_plugin.hf import EmoConfig

    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{folder}: not a Hugging Face checkpoint (no config.json)")
    values = json.loads(config_file.read_text())
    if values.get("model_type") != "emo":
        raise ConversionError(f"{config_file}: model_type is {values.get('model_type')!r}, expected 'emo'")
    return record_from_hf_config(EmoConfig.from_dict(values))


def check_layer_count(hf: HfWeights, record: ModelRecord) -> None:
    """The weights must hold exactly the config's layers: a shorter config would silently drop layers."""
    found = {weight_map.hf_layer_of(name) for name in hf.names()} - {None}
    if found != set(range(record.num_layers)):
        raise ConversionError(
            f"{hf.folder / 'config.json'}: num_hidden_layers={record.num_layers}, but the weights hold {len(found)} "
            f"layers (indices {min(found, default=None)}..{max(found, default=None)}); "
            "fix num_hidden_layers in config.json to match the checkpoint"
        )


def host_slices(model) -> Iterator[tuple[str, str, tuple[int, ...], torch.Tensor]]:
    """(local name, global key, leading layer/expert index, parameter) of every weight of a 1-rank model.

    Megatron's ``sharded_state_dict`` names each parameter by its global key and offset, the vocabulary of
    the weight map; on one rank every slice is whole, so the offset's leading axes are the unit's index.
    """
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensorFactory

    for name, entry in model.sharded_state_dict(prefix="").items():
        if isinstance(entry, ShardedObject):  # _extra_state, no weights
            continue
        placed = entry.build()[0] if isinstance(entry, ShardedTensorFactory) else entry
        yield name, entry.key, tuple(placed.global_offset[: placed.prepend_axis_num]), entry.data


def fill_host_model(model, hf: HfWeights, record: ModelRecord, progress: bool = True) -> None:
    """Every host-model slice from its HF tensors (shapes checked), inert experts with zeros."""
    units = {(unit.row.megatron, unit.index): unit for unit in weight_map.units(record)}
    slices = list(host_slices(model))
    with torch.no_grad():
        for name, key, index, param in tqdm(slices, desc="import", unit="tensor", disable=not progress):
            unit = units.get((key, index))
            if unit is None:
                raise ConversionError(f"no HF source for Megatron parameter {name!r} ({key}{list(index)})")
            if unit.hf_names:
                tensors = [hf.get(n, shape) for n, shape in zip(unit.hf_names, unit.hf_shapes)]
                value = unit.row.layout.merge(tensors, record, unit.slots)
            else:
                value = torch.zeros_like(param)
            if tuple(value.shape) != tuple(param.shape):
                raise shape_error(f"{hf.folder} → Megatron {name}", name, param.shape, value.shape)
            param.copy_(value.to(param.dtype))


def import_from_hf(
    hf_folder: str | Path,
    output: str | Path,
    *,
    target_expert_parallel_size: int = 1,
    dtype: str = "fp32",
    force: bool = False,
    progress: bool = True,
) -> dict:
    record = read_hf_record(hf_folder).with_inert_padding(target_expert_parallel_size)
    hf = HfWeights(hf_folder)
    check_layer_count(hf, record)
    tokenizer = Path(hf_folder) / "tokenizer.model"
    iteration_dir = save_weights_checkpoint(hf, record, output, dtype=dtype, force=force, inputs=(hf_folder,),
                                            tokenizer=tokenizer if tokenizer.is_file() else None, progress=progress)
    return {
        "source": str(hf_folder),
        "output": str(output),
        "iteration_dir": str(iteration_dir),
        "model": record.to_dict(),
        "inert_experts": record.num_inert_experts,
    }


def save_weights_checkpoint(weights, record: ModelRecord, output: str | Path, *, dtype: str, force: bool,
                            inputs: tuple, tokenizer: Path | None, progress: bool,
                            extra_files: dict[str, str] | None = None) -> Path:
    """A weights-only dist checkpoint (iteration 0, model record in the common state) from HF-named tensors
    (``weights``: ``get(name, shape)``, ``names()`` and ``folder``, like ``HfWeights``); returns its folder."""
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy

    model = build_host_model(record, params_dtype=DTYPES[dtype])
    fill_host_model(model, weights, record, progress)
    with atomic_output_dir(output, force, inputs=inputs) as folder:
        state = {"model": model.sharded_state_dict(prefix=""), RECORD_KEY: record.to_dict(), "iteration": 0}
        path = checkpoint.save(folder, 0, state, HostTorchDistSaveStrategy())
        if tokenizer is not None:
            shutil.copyfile(tokenizer, folder / "tokenizer.model")
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text)
    return Path(output) / path.name
