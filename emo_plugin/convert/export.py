"""Megatron dist checkpoint (any TP/EP/PP layout) → EMO Hugging Face folder, streamed tensor by tensor.

Each HF tensor is computed from one slice of one global Megatron tensor (a layer's attention, one expert of
one layer, ...) read straight from the torch_dist files, cast to the export dtype and appended to the current
safetensors shard. Inert experts (Megatron-only padding slots) are dropped; the shared expert MLP of width
S × ffn is split into S HF expert slots placed last, whose gate rows are written as zeros (they never affect
the output: shared experts have weight 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from emo_plugin.convert import hf_names as N
from emo_plugin.convert import megatron_keys as K
from emo_plugin.convert.checkpoint_config import record_of
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.convert.hf_config import hf_config_kwargs
from emo_plugin.convert.hf_files import copy_modeling_code, write_config
from emo_plugin.convert.model_card import training_settings, write_model_card
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.convert.safetensors_writer import ShardedSafetensorsWriter, parse_size
from emo_plugin.convert.tokenizer_export import write_tokenizer
from emo_plugin.model.record import ModelRecord

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def hf_tensors(reader: DistCheckpointReader, arch: ModelRecord) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) pairs in checkpoint order, each read on demand."""
    R, S = arch.num_selectable_experts, arch.num_shared_experts
    yield N.EMBED, reader.read(K.EMBEDDING)
    for i in range(arch.num_layers):
        yield N.layer(i, N.PRE_ATTN_NORM), reader.read(K.INPUT_NORM, i)
        q, k, v = K.split_qkv(reader.read(K.QKV, i), arch)
        yield N.attn(i, "q"), q
        yield N.attn(i, "k"), k
        yield N.attn(i, "v"), v
        yield N.attn(i, "o"), reader.read(K.PROJ, i)
        yield N.layer(i, N.PRE_FFN_NORM), reader.read(K.MLP_NORM, i)
        router = reader.read(K.ROUTER, i)[:R]  # inert rows dropped
        yield N.gate(i), torch.cat([router, router.new_zeros(S, arch.hidden_size)])
        for e in range(R):
            ((gate, up),) = K.split_gated_fc1(reader.read(K.EXPERT_FC1, i, e))
            yield N.expert(i, e, "gate"), gate
            yield N.expert(i, e, "up"), up
            yield N.expert(i, e, "down"), reader.read(K.EXPERT_FC2, i, e)
        if S:
            pairs = K.split_gated_fc1(reader.read(K.SHARED_FC1, i), S)
            downs = reader.read(K.SHARED_FC2, i).chunk(S, dim=1)
            for s, ((gate, up), down) in enumerate(zip(pairs, downs)):
                yield N.expert(i, R + s, "gate"), gate
                yield N.expert(i, R + s, "up"), up
                yield N.expert(i, R + s, "down"), down
    yield N.NORM, reader.read(K.FINAL_NORM)
    yield N.LM_HEAD, reader.read(K.OUTPUT)


def _tokenizer_next_to(iteration_dir: Path) -> Path | None:
    """The ``tokenizer.model`` the importer copies next to the iteration folders, if any."""
    for candidate in (iteration_dir / "tokenizer.model", iteration_dir.parent / "tokenizer.model"):
        if candidate.is_file():
            return candidate
    return None


def tensor_count(arch: ModelRecord) -> int:
    per_layer = 7 + 3 * (arch.num_selectable_experts + arch.num_shared_experts)
    return 3 + arch.num_layers * per_layer


def export_to_hf(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dtype: str = "bf16",
    max_shard_size: str | int = "5GB",
    tokenizer: str | Path | None = None,
    model_config: str | Path | None = None,
    key_prefix: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write the HF folder; returns a summary (model record, bytes, parameters, shards)."""
    reader = DistCheckpointReader(checkpoint, key_prefix)
    arch, stored_tokenizer = record_of(reader, model_config)
    tokenizer = tokenizer or stored_tokenizer or _tokenizer_next_to(reader.path)
    torch_dtype = DTYPES[dtype]
    from emo_plugin.hf import EmoConfig

    run = reader.common_state().get("config")
    config = EmoConfig(**hf_config_kwargs(arch))
    with atomic_output_dir(output, force, inputs=(checkpoint, tokenizer, model_config)) as folder:
        writer = ShardedSafetensorsWriter(folder, parse_size(max_shard_size))
        for name, tensor in tqdm(
            hf_tensors(reader, arch), total=tensor_count(arch), desc="export", unit="tensor", disable=not progress
        ):
            writer.add(name, tensor.to(torch_dtype))
        index = writer.close()
        values = write_config(folder, config, torch_dtype)
        copy_modeling_code(folder)
        if tokenizer:
            write_tokenizer(tokenizer, folder)
        training = training_settings(run, arch) if isinstance(run, dict) else None
        write_model_card(folder, values, training, index["metadata"]["total_parameters"], bool(tokenizer))
    return {
        "source": str(reader.path),
        "output": str(output),
        "model": arch.to_dict(),
        "bytes": index["metadata"]["total_size"],
        "parameters": index["metadata"]["total_parameters"],
        "shards": len(set(index["weight_map"].values())),
        "tokenizer": str(tokenizer) if tokenizer else None,
    }
