"""The 1-rank host (CPU, gloo) Megatron model the importer fills, and the process group it needs.

Building the model on one rank with the local spec is the simplest way to get exactly the sharded state dict
Megatron expects: ``dist_checkpointing`` then reshards it for any TP/EP/PP on load.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from emo_plugin.free_port import free_port
from emo_plugin.model.megatron_config import transformer_config
from emo_plugin.model.record import ModelRecord


def ensure_single_rank_megatron() -> None:
    """A world-size-1 gloo group and Megatron parallel state (1, 1), unless the caller already has them."""
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)


def build_host_model(record: ModelRecord, *, params_dtype=torch.float32, pool_eval: int | None = None):
    """The model of ``record`` on the host (fp32 unless asked, CPU init, allgather dispatcher).

    ``pool_eval`` defaults to "unrestricted" (all router rows), the routing of the HF model.
    """
    from emo_plugin.model.build import build_emo_gpt_model

    ensure_single_rank_megatron()
    config = transformer_config(
        dataclasses.replace(record, pool_eval=pool_eval or record.num_moe_experts),
        use_cpu_initialization=True,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        moe_token_dispatcher_type="allgather",
    )
    return build_emo_gpt_model(
        config,
        vocab_size=record.vocab_size,
        max_sequence_length=record.seq_length,
        use_transformer_engine=False,
        host_execution=True,
        rotary_base=record.rotary_base,
    )
