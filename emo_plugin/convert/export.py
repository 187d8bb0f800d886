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
from emo_plugin.convert.architecture import EmoArchitecture
from emo_plugin.convert.checkpoint_config import architecture_of
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.convert.errors import ConversionError
from emo_plugin.convert.hf_files import copy_modeling_code, write_config
from emo_plugin.convert.model_card import resolved_run, training_settings, write_model_card
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.convert.safetensors_writer import ShardedSafetensorsWriter, parse_size
from emo_plugin.convert.tokenizer_export import write_tokenizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def hf_tensors(reader: DistCheckpointReader, arch: EmoArchitecture) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) pairs in checkpoint order, each read on demand."""
    R, S = arch.num_routed_experts, arch.num_shared_experts
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


def tensor_count(arch: EmoArchitecture) -> int:
    per_layer = 7 + 3 * (arch.num_routed_experts + arch.num_shared_experts)
    return 3 + arch.num_layers * per_layer


def inference_pool_size(choice: str | int | None, run, arch: EmoArchitecture) -> int | None:
    """The HF ``emo_inference_pool_size`` to write: ``off``/None (plain top-k, the default), ``training`` (the
    run's ``emo.pool_eval``, the pools its validation used) or a number of routed experts."""
    if choice in (None, "off"):
        return None
    if choice == "training":
        if run is None:
            raise ConversionError("--inference-pool-size=training: the checkpoint stores no training config (e.g. "
                                  "tools/import_hf.py output), so its emo.pool_eval is unknown; pass a number")
        pool = run[1].pool_eval
    else:
        try:
            pool = int(choice)
        except ValueError:
            raise ConversionError(f"--inference-pool-size={choice}: expected off, training or a number of routed "
                                  "experts") from None
    if pool < arch.routed_per_token:
        raise ConversionError(f"--inference-pool-size={choice}: a pool of {pool} experts is smaller than the "
                              f"{arch.routed_per_token} routed experts each token needs")
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
    """Write the HF folder; returns a summary (architecture, bytes, parameters, shards)."""
    reader = DistCheckpointReader(checkpoint, key_prefix)
    arch, stored_tokenizer = architecture_of(reader, model_config)
    tokenizer = tokenizer or stored_tokenizer or _tokenizer_next_to(reader.path)
    torch_dtype = DTYPES[dtype]
    from emo_plugin.hf import EmoConfig

    run = resolved_run(reader.common_state().get("config"))
    recorded = {} if run is None else {"router_aux_loss_coef": run[1].lb_coeff}
    config = EmoConfig(**arch.hf_config_kwargs(), **recorded,
                       emo_inference_pool_size=inference_pool_size(inference_pool, run, arch))
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
        training = None if run is None else training_settings(*run)
        write_model_card(folder, values, training, index["metadata"]["total_parameters"], bool(tokenizer))
    return {
        "source": str(reader.path),
        "output": str(output),
        "architecture": arch.to_dict(),
        "bytes": index["metadata"]["total_size"],
        "parameters": index["metadata"]["total_parameters"],
        "shards": len(set(index["weight_map"].values())),
        "tokenizer": str(tokenizer) if tokenizer else None,
    }
