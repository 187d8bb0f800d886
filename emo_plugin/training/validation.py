"""Every check on a ``TrainingConfig``, in one place, before any model or process group is built.

Errors are ``ConfigError`` with ``field=value: what was expected``. ``validate`` runs twice: once statically
(right after parsing) and once with the world size known (``world_size=``), for the batch arithmetic.
"""

from __future__ import annotations

from pathlib import Path

from emo_plugin.config import EmoConfigError
from emo_plugin.model_sizes import SIZES
from emo_plugin.training.builders import FP8_FORMAT, build_transformer_config, resolve_device
from emo_plugin.training.config import ConfigError, TrainingConfig


def _check(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def validate(cfg: TrainingConfig, world_size: int | None = None) -> None:
    m, par, prec, opt, sch, b, d = cfg.model, cfg.parallel, cfg.precision, cfg.optimizer, cfg.schedule, cfg.batch, cfg.data
    _check(m.size in SIZES, "model.size", m.size, f"one of {', '.join(SIZES)}")
    _check(par.device in ("auto", "cpu", "cuda"), "parallel.device", par.device, "'auto', 'cpu' or 'cuda'")
    device = resolve_device(cfg)
    _check(device in ("cpu", "cuda"), "EMO_DEVICE", device, "'cpu' or 'cuda'")
    for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "expert_model_parallel_size", "context_parallel_size"):
        _check(getattr(par, key) >= 1, f"parallel.{key}", getattr(par, key), "an integer >= 1")
    _check(prec.dtype in ("fp32", "bf16"), "precision.dtype", prec.dtype, "'fp32' or 'bf16'")
    _check(prec.fp8_recipe in (None, *FP8_FORMAT), "precision.fp8_recipe", prec.fp8_recipe, f"none or one of {', '.join(FP8_FORMAT)}")
    if device == "cpu":
        # The host path has no Megatron CUDA machinery: only data and expert parallelism, fp32.
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            _check(getattr(par, key) == 1, f"parallel.{key}", getattr(par, key), "1 on CPU (only data and expert parallelism run on the host)")
        _check((par.expert_tensor_parallel_size or 1) == 1, "parallel.expert_tensor_parallel_size", par.expert_tensor_parallel_size, "1 on CPU")
        _check(not par.sequence_parallel, "parallel.sequence_parallel", par.sequence_parallel, "false on CPU")
        _check(prec.dtype == "fp32", "precision.dtype", prec.dtype, "'fp32' on CPU")
        _check(prec.fp8_recipe is None, "precision.fp8_recipe", prec.fp8_recipe, "none on CPU (FP8 needs Transformer Engine on a GPU)")
        _check(not m.recompute_moe, "model.recompute_moe", m.recompute_moe, "false on CPU")
    else:
        _check(not d.intra_document_attention, "data.intra_document_attention", d.intra_document_attention,
               "false on GPU for now (the GPU path does not build THD packed-sequence params yet)")
    _check(opt.lr > 0, "optimizer.lr", opt.lr, "a positive float")
    _check(0 <= opt.min_lr <= opt.lr, "optimizer.min_lr", opt.min_lr, f"between 0 and optimizer.lr={opt.lr}")
    for key in ("adam_beta1", "adam_beta2"):
        _check(0 <= getattr(opt, key) < 1, f"optimizer.{key}", getattr(opt, key), "a float in [0, 1)")
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "a float >= 0")
    _check(opt.clip_grad >= 0, "optimizer.clip_grad", opt.clip_grad, "a float >= 0 (0 disables clipping)")
    _check(sch.train_iters >= 1, "schedule.train_iters", sch.train_iters, "an integer >= 1")
    _check(0 <= sch.lr_warmup_iters <= sch.train_iters, "schedule.lr_warmup_iters", sch.lr_warmup_iters, f"between 0 and schedule.train_iters={sch.train_iters}")
    _check(sch.lr_decay_style in ("cosine", "linear", "constant"), "schedule.lr_decay_style", sch.lr_decay_style, "'cosine', 'linear' or 'constant'")
    _check(b.micro_batch_size >= 1, "batch.micro_batch_size", b.micro_batch_size, "an integer >= 1")
    _check(b.global_batch_size >= b.micro_batch_size, "batch.global_batch_size", b.global_batch_size, f">= batch.micro_batch_size={b.micro_batch_size}")
    _check(bool(d.paths) or bool(d.corpus), "data.paths", d.paths, "at least one indexed dataset prefix, or data.corpus with data.tokenizer_model")
    _check(bool(d.tokenizer_model), "data.tokenizer_model", d.tokenizer_model, "a sentencepiece model (vocabulary size, EOD id, dataset sidecar check)")
    _check(not d.corpus or Path(d.corpus).is_file(), "data.corpus", d.corpus, "an existing JSON-lines file")
    _check(not d.tokenizer_model or Path(d.tokenizer_model).is_file(), "data.tokenizer_model", d.tokenizer_model, "an existing sentencepiece .model file")
    _check(len(d.split.split(",")) == 3, "data.split", d.split, "three comma-separated weights 'train,valid,test'")
    _check(cfg.nan_policy in ("stop", "skip"), "nan_policy", cfg.nan_policy, "'stop' or 'skip'")
    _check(cfg.emo.lb_scope in ("micro_batch", "global_batch"), "emo.lb_scope", cfg.emo.lb_scope, "'micro_batch' or 'global_batch'")
    _check(cfg.logging.log_interval >= 1, "logging.log_interval", cfg.logging.log_interval, "an integer >= 1")
    _check(cfg.checkpoint.save_interval >= 0, "checkpoint.save_interval", cfg.checkpoint.save_interval, "an integer >= 0")
    _check(cfg.eval.interval >= 0 and cfg.eval.iters >= 0, "eval.interval", cfg.eval.interval, "integers >= 0 (eval.interval, eval.iters)")
    try:
        build_transformer_config(cfg, device)
    except EmoConfigError as error:
        raise ConfigError(f"model/emo: {error}") from None
    except (ValueError, AssertionError) as error:  # Megatron's own TransformerConfig checks
        raise ConfigError(f"model/parallel: Megatron rejected the transformer config: {error}") from None
    if world_size is not None:
        model_parallel = par.tensor_model_parallel_size * par.pipeline_model_parallel_size * par.context_parallel_size
        _check(world_size % model_parallel == 0, "parallel", f"tp*pp*cp={model_parallel}", f"a divisor of the world size {world_size}")
        dp = world_size // model_parallel
        expert_parallel = par.expert_model_parallel_size * (par.expert_tensor_parallel_size or 1) * par.pipeline_model_parallel_size
        _check(world_size % expert_parallel == 0, "parallel.expert_model_parallel_size", par.expert_model_parallel_size,
               f"ep*etp*pp={expert_parallel} to divide the world size {world_size}")
        _check(b.global_batch_size % (b.micro_batch_size * dp) == 0, "batch.global_batch_size", b.global_batch_size,
               f"a multiple of micro_batch_size × data-parallel size = {b.micro_batch_size} × {dp}")


def data_parallel_size(cfg: TrainingConfig, world_size: int) -> int:
    par = cfg.parallel
    return world_size // (par.tensor_model_parallel_size * par.pipeline_model_parallel_size * par.context_parallel_size)
