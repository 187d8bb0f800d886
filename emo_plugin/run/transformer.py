"""From the training config to Megatron's ``EmoTransformerConfig``: parallel layout, precision, fusions.

Kept apart from the loops so ``resolve`` can build (and thereby check) the transformer config without
building a model.
"""

from __future__ import annotations

import torch
from megatron.core.extensions.transformer_engine import HAVE_TE

from emo_plugin.errors import ConfigError
from emo_plugin.model.megatron_config import transformer_config
from emo_plugin.model.record import ModelRecord
from emo_plugin.moe.config import EmoTransformerConfig
from emo_plugin.run.config import TrainingConfig

FP8_FORMAT = {"delayed": "hybrid", "tensorwise": "hybrid", "mxfp8": "e4m3", "blockwise": "e4m3"}


def use_transformer_engine(cfg: TrainingConfig, device: str, have_te: bool = HAVE_TE) -> bool:
    """Whether this run builds Megatron's TE spec; an error, never a silent fallback, if TE is asked for but absent.

    ``have_te`` is Megatron's own detection (``megatron.core.extensions.transformer_engine.HAVE_TE``: TE imports
    with the pieces Megatron uses), not "some ``transformer_engine`` module imported". CPU runs never use TE.
    """
    if device != "cuda":
        return False
    impl = cfg.model.transformer_impl
    if impl not in ("transformer_engine", "local"):
        raise ConfigError(f"model.transformer_impl={impl!r}: expected 'transformer_engine' or 'local'")
    if not have_te and impl == "transformer_engine":
        raise ConfigError(
            "model.transformer_impl='transformer_engine': Transformer Engine is not importable here "
            "(megatron.core.extensions.transformer_engine.HAVE_TE is False); install it (pip install "
            "'emo_plugin[te]') or set model.transformer_impl=local for Megatron's PyTorch layers"
        )
    if not have_te and cfg.precision.fp8_recipe:
        raise ConfigError(
            f"precision.fp8_recipe={cfg.precision.fp8_recipe!r}: FP8 needs Transformer Engine, which is not "
            "importable here; install it (pip install 'emo_plugin[te]') or unset precision.fp8_recipe"
        )
    if impl == "local" and cfg.precision.fp8_recipe:
        raise ConfigError(
            f"precision.fp8_recipe={cfg.precision.fp8_recipe!r}: FP8 runs in Transformer Engine layers; "
            "expected model.transformer_impl=transformer_engine"
        )
    return impl == "transformer_engine"


def build_transformer_config(cfg: TrainingConfig, record: ModelRecord, device: str) -> EmoTransformerConfig:
    """The Megatron config of ``record`` trained as ``cfg`` says on ``device``; ``ConfigError`` for EMO-invalid
    combinations (called by ``resolve``)."""
    par, prec = cfg.parallel, cfg.precision
    on_gpu = device == "cuda"
    te_layers = on_gpu and cfg.model.transformer_impl == "transformer_engine"
    dtype = torch.bfloat16 if prec.dtype == "bf16" else torch.float32
    kwargs = dict(
        init_method_std=cfg.model.init_method_std,
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        expert_model_parallel_size=par.expert_model_parallel_size,
        expert_tensor_parallel_size=par.expert_tensor_parallel_size or 1,
        context_parallel_size=par.context_parallel_size,
        sequence_parallel=par.sequence_parallel,
        params_dtype=dtype,
        bf16=prec.dtype == "bf16",
        pipeline_dtype=dtype if par.pipeline_model_parallel_size > 1 else None,
        virtual_pipeline_model_parallel_size=par.virtual_pipeline_model_parallel_size,
        # Megatron-LM's interleaved default: one p2p pair per call. Batched p2p would post two sends between the
        # same two ranks at PP=2 (prev = next) that the receiver can match the wrong way round.
        overlap_p2p_comm=bool(par.virtual_pipeline_model_parallel_size),
        batch_p2p_comm=not par.virtual_pipeline_model_parallel_size,
        use_cpu_initialization=not on_gpu,
        moe_token_dispatcher_type="alltoall" if on_gpu else "allgather",
        moe_grouped_gemm=te_layers,  # TEGroupedMLP; the local spec's grouped GEMM needs the grouped_gemm package
        # TE's fused RoPE: Megatron's unfused thd RoPE syncs with the host and loops over documents in every layer
        apply_rope_fusion=te_layers and HAVE_TE,
    )
    if prec.fp8_recipe:
        kwargs.update(fp8=FP8_FORMAT[prec.fp8_recipe], fp8_recipe=prec.fp8_recipe)
    if cfg.model.recompute_moe:
        kwargs.update(recompute_granularity="selective", recompute_modules=["moe"])
    return transformer_config(record, router=dict(lb_scope=cfg.emo.lb_scope, seed=cfg.seed), **kwargs)


def padded_vocab_size(vocab_size: int, tensor_parallel_size: int, multiple: int = 128) -> int:
    """Megatron's vocabulary padding: a multiple of 128 × TP so embedding shards are even."""
    step = multiple * tensor_parallel_size
    return -(-vocab_size // step) * step
