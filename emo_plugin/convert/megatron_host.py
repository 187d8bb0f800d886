"""The 1-rank host (CPU, gloo) Megatron model the importer fills, and the process group it needs.

Building the model on one rank with the local spec is the simplest way to get exactly the sharded state dict
Megatron expects: ``dist_checkpointing`` then reshards it for any TP/EP/PP on load.
"""

from __future__ import annotations

import os

import torch

from emo_plugin.free_port import free_port

def ensure_single_rank_megatron() -> None:
    """A world-size-1 gloo group and Megatron parallel state (1, 1), unless the caller already has them."""
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)


def build_host_model(arch, *, params_dtype=torch.float32, pool_eval: int | None = None):
    from emo_plugin.model.build import build_emo_gpt_model

    ensure_single_rank_megatron()
    config = arch.transformer_config(params_dtype=params_dtype, pool_eval=pool_eval)
    return build_emo_gpt_model(
        config,
        vocab_size=arch.vocab_size,
        max_sequence_length=arch.max_position_embeddings,
        use_transformer_engine=False,
        host_execution=True,
        rotary_base=arch.rotary_base,
    )
