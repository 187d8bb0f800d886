"""Every check on the fields of a ``TrainingConfig``, in one place, before any model or process group is built.

Errors are ``ConfigError`` with ``field=value: what was expected``. ``resolve`` runs ``validate`` first and then
checks what only the derived run shows (the record's rules, Megatron's config checks, what divides the world
size); the planner's fit check (``planning/fit_check.py``) refuses what cannot fit in memory.
Anything a value could crash later (a division by zero, a numpy seed range, a split with no documents) is
checked here, so a bad value never reaches Megatron as a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from emo_plugin.data.paths import parse_paths
from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.sizes import SIZES
from emo_plugin.run.config import SECTIONS, ScheduleSection, TrainingConfig, parse_split
from emo_plugin.run.transformer import FP8_FORMAT

RECORD_FIELDS = {f.name: f for f in dataclasses.fields(ModelRecord)}
SEED_LIMIT = 2**32  # numpy's RandomState (Megatron's dataset shuffling) takes seeds in [0, 2**32)
DECAY_STYLES = ("cosine", "linear", "constant", "WSD")  # Megatron's OptimizerParamScheduler names
WSD_DECAY_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")


def _check(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def record_field_key(name: str) -> str:
    """The config key that sets a model record field (``model.``, ``emo.`` or ``data.``, as the record says)."""
    return f"{RECORD_FIELDS[name].metadata['section'] or 'model'}.{name}"


def _check_finite_floats(cfg: TrainingConfig) -> None:
    """No NaN or infinity in any float field (a YAML ``.nan`` or ``--lr=inf`` would poison the run silently)."""
    for name, section in [(None, cfg), *((s, getattr(cfg, s)) for s in SECTIONS)]:
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                key = f.name if name is None else f"{name}.{f.name}"
                raise ConfigError(f"{key}={value!r}: expected a finite number")


def _check_writable(key: str, value: str | None, *, is_file: bool = False) -> None:
    """An output location must be (or be creatable inside) a writable directory; checked without creating it."""
    if not value:
        return
    path = Path(value)
    if path.exists():
        _check(path.is_file() if is_file else path.is_dir(), key, value, "a file path" if is_file else "a directory")
    parent = path.parent if is_file or not path.exists() else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    _check(parent.is_dir() and os.access(parent, os.W_OK | os.X_OK), key, value,
           f"a location inside a writable directory ({parent} is not one)")


def _check_model(cfg: TrainingConfig) -> None:
    """The run's own model fields (the record's rules run on the resolved record: ``resolve.py``)."""
    _check(cfg.model.vocab_size is None or cfg.model.vocab_size >= 1, "model.vocab_size", cfg.model.vocab_size,
           "none (the tokenizer's, padded) or an integer >= 1")
    _check(cfg.model.init_method_std > 0, "model.init_method_std", cfg.model.init_method_std, "a positive float")


def _check_data(cfg: TrainingConfig, eval_iters: int) -> None:
    d = cfg.data
    _check(bool(d.paths) or bool(d.corpus), "data.paths", d.paths,
           "at least one indexed dataset prefix, or data.corpus with data.tokenizer_model")
    _check(bool(d.tokenizer_model), "data.tokenizer_model", d.tokenizer_model,
           "a sentencepiece model (vocabulary size, EOD id, dataset sidecar check)")
    _check(not d.corpus or Path(d.corpus).is_file(), "data.corpus", d.corpus, "an existing JSON-lines file")
    _check(Path(d.tokenizer_model).is_file(), "data.tokenizer_model", d.tokenizer_model,
           "an existing sentencepiece .model file")
    train, valid, _ = parse_split(d.split)
    _check(train > 0, "data.split", d.split, "a positive train weight (the first of 'train,valid,test')")
    _check(valid > 0 or eval_iters == 0, "data.split", d.split,
           "a positive validation weight (the second of 'train,valid,test'), or eval.iters=0 to skip validation")
    if d.paths:
        for prefix in parse_paths(d.paths)[0]:
            missing = [s for s in (".bin", ".idx") if not Path(f"{prefix}{s}").is_file()]
            _check(not missing, "data.paths", prefix,
                   f"an indexed dataset prefix ({prefix}{missing[0] if missing else ''} "
                   "does not exist; make it with tools/preprocess_data.py)")
    else:
        _check_writable("data.cache_dir", d.cache_dir)


def _check_schedule(cfg: TrainingConfig, inputs: bool) -> None:
    """The decay style and its WSD length, and an anneal stage's length, target and starting point."""
    sch = cfg.schedule
    _check(sch.lr_decay_style in DECAY_STYLES, "schedule.lr_decay_style", sch.lr_decay_style,
           f"one of {', '.join(DECAY_STYLES)}")
    _check(sch.lr_wsd_decay_style in WSD_DECAY_STYLES, "schedule.lr_wsd_decay_style", sch.lr_wsd_decay_style,
           f"one of {', '.join(WSD_DECAY_STYLES)}")
    if sch.lr_decay_style == "WSD":
        decay = max(sch.lr_decay_iters or sch.train_iters, sch.lr_warmup_iters + 1) - sch.lr_warmup_iters
        _check(sch.lr_wsd_decay_iters is not None and 1 <= sch.lr_wsd_decay_iters <= decay,
               "schedule.lr_wsd_decay_iters", sch.lr_wsd_decay_iters,
               f"an integer in [1, {decay}] with lr_decay_style=WSD (the final decay, inside the {decay} steps "
               "between warm-up and lr_decay_iters)")
    else:
        _check(sch.lr_wsd_decay_iters is None, "schedule.lr_wsd_decay_iters", sch.lr_wsd_decay_iters,
               f"none unless schedule.lr_decay_style=WSD (it is {sch.lr_decay_style!r})")
    if sch.anneal_iters is None:
        for key in ("anneal_min_lr", "anneal_start_lr"):
            default = getattr(ScheduleSection(), key)
            _check(getattr(sch, key) == default, f"schedule.{key}", getattr(sch, key),
                   f"{default} unless schedule.anneal_iters is set (it configures the anneal stage)")
        return
    _check(sch.anneal_iters >= 2, "schedule.anneal_iters", sch.anneal_iters,
           "none or an integer >= 2 (the first anneal step runs at the checkpoint's lr, the last at anneal_min_lr)")
    _check(not inputs or bool(cfg.checkpoint.load), "schedule.anneal_iters", sch.anneal_iters,
           "checkpoint.load to name the checkpoint to anneal from")
    _check(sch.anneal_min_lr >= 0, "schedule.anneal_min_lr", sch.anneal_min_lr, "a float >= 0")
    _check(sch.anneal_start_lr is None or sch.anneal_start_lr >= sch.anneal_min_lr, "schedule.anneal_start_lr",
           sch.anneal_start_lr, f"none (the checkpoint's lr) or >= schedule.anneal_min_lr={sch.anneal_min_lr}")
    _check(sch.anneal_start_lr is None or sch.anneal_start_lr > 0, "schedule.anneal_start_lr", sch.anneal_start_lr,
           "none (the checkpoint's lr) or a positive float")


def _check_plan(cfg: TrainingConfig) -> None:
    """The planner's inputs (``--dry-run`` and the GPU fit check): sizes that can be divided by and compared."""
    plan = cfg.plan
    _check(plan.world_size is None or plan.world_size >= 1, "plan.world_size", plan.world_size,
           "none or an integer >= 1")
    _check(plan.device_memory_gib > 0, "plan.device_memory_gib", plan.device_memory_gib, "a positive number of GiB")
    _check(0 <= plan.reserved_gib < plan.device_memory_gib, "plan.reserved_gib", plan.reserved_gib,
           f"a number of GiB in [0, plan.device_memory_gib={plan.device_memory_gib:g})")


def validate(cfg: TrainingConfig, device: str, *, inputs: bool = True) -> None:
    """Every field on its own and with the fields it depends on, for a run on ``device``; ``inputs``: also the
    files the run reads and the locations it writes (the dry run plans without them)."""
    m, par, prec, opt = cfg.model, cfg.parallel, cfg.precision, cfg.optimizer
    sch, b, d = cfg.schedule, cfg.batch, cfg.data
    _check_finite_floats(cfg)
    _check(m.size in SIZES, "model.size", m.size, f"one of {', '.join(SIZES)}")
    _check(cfg.emo.eos_grouping in (None, "ends", "starts"), "emo.eos_grouping", cfg.emo.eos_grouping,
           "'ends' (an EOD routes with the document it ends) or 'starts' (with the next one, as AI2)")
    for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "expert_model_parallel_size",
                "context_parallel_size"):
        _check(getattr(par, key) >= 1, f"parallel.{key}", getattr(par, key), "an integer >= 1")
    for key in ("expert_tensor_parallel_size", "virtual_pipeline_model_parallel_size"):
        _check(getattr(par, key) is None or getattr(par, key) >= 1, f"parallel.{key}", getattr(par, key),
               "none or an integer >= 1")
    _check(par.virtual_pipeline_model_parallel_size is None or par.pipeline_model_parallel_size > 1,
           "parallel.virtual_pipeline_model_parallel_size", par.virtual_pipeline_model_parallel_size,
           "none unless parallel.pipeline_model_parallel_size > 1 (model chunks per pipeline rank)")
    _check(prec.dtype in ("fp32", "bf16"), "precision.dtype", prec.dtype, "'fp32' or 'bf16'")
    _check(prec.fp8_recipe in (None, *FP8_FORMAT), "precision.fp8_recipe", prec.fp8_recipe,
           f"none or one of {', '.join(FP8_FORMAT)}")
    if device == "cpu":
        # The host path has no Megatron CUDA machinery: only data and expert parallelism, fp32.
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            _check(getattr(par, key) == 1, f"parallel.{key}", getattr(par, key),
                   "1 on CPU (only data and expert parallelism run on the host)")
        _check((par.expert_tensor_parallel_size or 1) == 1, "parallel.expert_tensor_parallel_size",
               par.expert_tensor_parallel_size, "1 on CPU")
        _check(not par.sequence_parallel, "parallel.sequence_parallel", par.sequence_parallel, "false on CPU")
        _check(prec.dtype == "fp32", "precision.dtype", prec.dtype, "'fp32' on CPU")
        _check(prec.fp8_recipe is None, "precision.fp8_recipe", prec.fp8_recipe,
               "none on CPU (FP8 needs Transformer Engine on a GPU)")
        _check(not m.recompute_moe, "model.recompute_moe", m.recompute_moe, "false on CPU")
    else:
        # On GPU intra-document attention is thd packing (training/packed_sequences.py): TE attention only.
        _check(not d.intra_document_attention or m.transformer_impl == "transformer_engine",
               "data.intra_document_attention", d.intra_document_attention,
               "false with model.transformer_impl=local (thd packed sequences run only in Transformer Engine's "
               "attention; Megatron's local DotProductAttention refuses packed_seq_params)")
    _check(m.transformer_impl in ("transformer_engine", "local"), "model.transformer_impl", m.transformer_impl,
           "'transformer_engine' or 'local'")
    _check(not opt.overlap_param_gather or opt.use_distributed_optimizer, "optimizer.overlap_param_gather",
           opt.overlap_param_gather, "false unless optimizer.use_distributed_optimizer (it overlaps that "
           "optimizer's parameter all-gather)")
    _check(opt.lr > 0, "optimizer.lr", opt.lr, "a positive float")
    _check(0 <= opt.min_lr <= opt.lr, "optimizer.min_lr", opt.min_lr, f"between 0 and optimizer.lr={opt.lr}")
    for key in ("adam_beta1", "adam_beta2"):
        _check(0 <= getattr(opt, key) < 1, f"optimizer.{key}", getattr(opt, key), "a float in [0, 1)")
    _check(opt.adam_eps > 0, "optimizer.adam_eps", opt.adam_eps, "a positive float")
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "a float >= 0")
    _check(opt.clip_grad >= 0, "optimizer.clip_grad", opt.clip_grad, "a float >= 0 (0 disables clipping)")
    _check(sch.train_iters >= 1, "schedule.train_iters", sch.train_iters, "an integer >= 1")
    if sch.anneal_iters is None:  # an anneal stage has neither warm-up nor the decay below
        _check(0 <= sch.lr_warmup_iters <= sch.train_iters, "schedule.lr_warmup_iters", sch.lr_warmup_iters,
               f"between 0 and schedule.train_iters={sch.train_iters}")
        _check(sch.lr_decay_iters is None or sch.lr_decay_iters > sch.lr_warmup_iters, "schedule.lr_decay_iters",
               sch.lr_decay_iters, f"none (= train_iters) or more than schedule.lr_warmup_iters={sch.lr_warmup_iters}")
    _check_schedule(cfg, inputs)
    _check(b.micro_batch_size >= 1, "batch.micro_batch_size", b.micro_batch_size, "an integer >= 1")
    _check(b.global_batch_size >= b.micro_batch_size, "batch.global_batch_size", b.global_batch_size,
           f">= batch.micro_batch_size={b.micro_batch_size}")
    _check(cfg.eval.interval >= 0, "eval.interval", cfg.eval.interval, "an integer >= 0 (0: validate only at the end)")
    _check(cfg.eval.iters >= 0, "eval.iters", cfg.eval.iters, "an integer >= 0 (0: no validation)")
    _check(0 <= cfg.seed < SEED_LIMIT, "seed", cfg.seed, f"an integer in [0, {SEED_LIMIT}) (numpy's seed range)")
    _check(cfg.nan_policy in ("stop", "skip"), "nan_policy", cfg.nan_policy, "'stop' or 'skip'")
    _check(cfg.emo.lb_scope in ("micro_batch", "global_batch"), "emo.lb_scope", cfg.emo.lb_scope,
           "'micro_batch' or 'global_batch'")
    _check(cfg.logging.log_interval >= 1, "logging.log_interval", cfg.logging.log_interval, "an integer >= 1")
    _check(cfg.logging.peak_tflops is None or cfg.logging.peak_tflops > 0, "logging.peak_tflops",
           cfg.logging.peak_tflops, "none or a positive float")
    _check(cfg.checkpoint.save_interval >= 0, "checkpoint.save_interval", cfg.checkpoint.save_interval,
           "an integer >= 0")
    _check(cfg.checkpoint.keep_last_n >= 0, "checkpoint.keep_last_n", cfg.checkpoint.keep_last_n,
           "an integer >= 0 (0: keep all)")
    _check(sch.exit_duration_minutes is None or sch.exit_duration_minutes > 0, "schedule.exit_duration_minutes",
           sch.exit_duration_minutes, "none or a positive number of minutes")
    _check(sch.exit_duration_minutes is None or bool(cfg.checkpoint.save), "schedule.exit_duration_minutes",
           sch.exit_duration_minutes, "checkpoint.save to be set (the run saves there before its budget runs out)")
    _check(0 <= cfg.nan_max_skipped_fraction <= 1, "nan_max_skipped_fraction", cfg.nan_max_skipped_fraction,
           "a share in [0, 1]")
    _check(not cfg.checkpoint.finetune or bool(cfg.checkpoint.load), "checkpoint.finetune", cfg.checkpoint.finetune,
           "checkpoint.load to name the weights to start from (--load DIR --finetune)")
    _check_plan(cfg)
    _check_model(cfg)
    if not inputs:
        return
    for key, value, is_file in (("logging.tensorboard_dir", cfg.logging.tensorboard_dir, False),
                                ("logging.metrics_file", cfg.logging.metrics_file, True),
                                ("checkpoint.save", cfg.checkpoint.save, False)):
        _check_writable(key, value, is_file=is_file)
    _check_data(cfg, cfg.eval.iters)
