"""The typed training configuration: one dataclass per section, every field documented.

The documentation lives in ``field(metadata={"help": ...})`` so that ``emo-pretrain --help`` prints it. Values
come from (lowest to highest precedence) the dataclass defaults, a YAML file, dotted ``--section.field=value``
overrides and Megatron-style flags (``cli.py``). Nothing is checked here: ``validation.py`` checks the whole
config in one place before any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from emo_plugin.errors import ConfigError
from emo_plugin.model.megatron_lm_args import EMO_FLAGS, SHAPE_FLAGS
from emo_plugin.model.record import ModelRecord, fields_of_section
from emo_plugin.typed_values import coerce


def opt(default: Any, help: str, *, megatron: str | None = None, default_text: str | None = None):
    """A documented field; ``megatron`` names the equivalent Megatron-LM flag (accepted as an alias),
    ``default_text`` says in words where an unset (``None``) value comes from."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(**kwargs, metadata={"help": help, "megatron": megatron, "default_text": default_text})


def _record_overrides(section: str) -> list[tuple[str, Any, Any]]:
    """The model record's fields of ``section`` as optional overrides of the named size (``None``: the size's
    value), documented by the record (``emo_plugin/model/record.py``), the one place that describes them."""
    types = typing.get_type_hints(ModelRecord)
    aliases = {**SHAPE_FLAGS, **EMO_FLAGS, "num_query_groups": "--num-query-groups"}
    return [(f.name, types[f.name] | None, opt(None, f.metadata["help"], megatron=aliases.get(f.name),
                                               default_text=f.metadata["config_default"]))
            for f in fields_of_section(section)]


ModelSection = dataclasses.make_dataclass("ModelSection", [
    ("size", str, opt("tiny", "named size from emo_plugin.model.sizes (tiny, small, emo_1b14b, stdmoe_1b14b)",
                      megatron="--model-size")),
    *_record_overrides("model"),
    ("init_method_std", float, opt(0.02, "std of the normal weight init", megatron="--init-method-std")),
    ("recompute_moe", bool, opt(False, "selective recompute of the MoE layers (GPU memory saver)")),
    ("transformer_impl", str, opt("transformer_engine", "GPU layers: 'transformer_engine' (TE spec; an error if TE is "
                                  "not installed) or 'local' (Megatron's PyTorch spec); CPU always runs local",
                                  megatron="--transformer-impl")),
], namespace={"__doc__": "Architecture: a named size plus single-field overrides."})

EmoSection = dataclasses.make_dataclass("EmoSection", [
    *_record_overrides("emo"),
    ("lb_scope", str, opt("micro_batch", "load-balancing counts per 'micro_batch' (AI2) or per optimizer step "
                          "('global_batch')")),
], namespace={"__doc__": "EMO routing (document pools, load balancing); unset fields come from the model size."})


@dataclass
class ParallelSection:
    """Device and Megatron parallel layout (CPU: data and expert parallelism only)."""

    device: str = opt(
        "auto", "'cpu' (gloo, host execution), 'cuda' (NCCL, Megatron machinery) or 'auto' (env EMO_DEVICE, else cuda "
        "if available)")
    tensor_model_parallel_size: int = opt(1, "tensor parallel size (GPU only)", megatron="--tensor-model-parallel-size")
    pipeline_model_parallel_size: int = opt(
        1, "pipeline parallel size (GPU only)", megatron="--pipeline-model-parallel-size")
    expert_model_parallel_size: int = opt(1, "expert parallel size", megatron="--expert-model-parallel-size")
    expert_tensor_parallel_size: int | None = opt(
        None, "tensor parallel size inside experts (default 1)", megatron="--expert-tensor-parallel-size")
    context_parallel_size: int = opt(1, "context parallel size (GPU only)", megatron="--context-parallel-size")
    virtual_pipeline_model_parallel_size: int | None = opt(
        None, "model chunks per pipeline rank: interleaved 1F1B (GPU only)",
        megatron="--virtual-pipeline-model-parallel-size")
    sequence_parallel: bool = opt(
        False, "sequence parallelism (required for MoE with TP > 1)", megatron="--sequence-parallel")


@dataclass
class PrecisionSection:
    """Numerics."""

    dtype: str = opt("fp32", "parameter/compute dtype: fp32 or bf16 (bf16: GPU only)")
    fp8_recipe: str | None = opt(
        None, "Transformer Engine FP8 recipe on GPU: delayed, tensorwise, mxfp8, blockwise", megatron="--fp8-recipe")


@dataclass
class OptimizerSection:
    """AdamW (torch on CPU, Megatron's distributed optimizer on GPU)."""

    lr: float = opt(4e-3, "peak learning rate", megatron="--lr")
    min_lr: float = opt(0.0, "learning rate at the end of the decay", megatron="--min-lr")
    adam_beta1: float = opt(0.9, "AdamW beta1", megatron="--adam-beta1")
    adam_beta2: float = opt(0.95, "AdamW beta2", megatron="--adam-beta2")
    adam_eps: float = opt(1e-8, "AdamW epsilon", megatron="--adam-eps")
    weight_decay: float = opt(
        0.1, "decoupled weight decay (never on embeddings, norms or biases)", megatron="--weight-decay")
    clip_grad: float = opt(1.0, "clip the global grad norm to this (0 disables)", megatron="--clip-grad")
    use_distributed_optimizer: bool = opt(
        True, "shard optimizer state over data-parallel ranks (GPU)", megatron="--use-distributed-optimizer")
    overlap_grad_reduce: bool = opt(
        False, "overlap the DP gradient reduce with backward (GPU)", megatron="--overlap-grad-reduce")
    overlap_param_gather: bool = opt(False, "overlap the distributed optimizer's parameter all-gather with the next "
                                     "forward (GPU; needs use_distributed_optimizer)",
                                     megatron="--overlap-param-gather")


@dataclass
class ScheduleSection:
    """Training length and learning-rate schedule."""

    train_iters: int = opt(200, "optimizer steps to train", megatron="--train-iters")
    lr_warmup_iters: int = opt(20, "linear warm-up steps", megatron="--lr-warmup-iters")
    lr_decay_iters: int | None = opt(None, "decay length, warm-up included (default: train_iters)",
                                     megatron="--lr-decay-iters")
    lr_decay_style: str = opt("cosine", "cosine, linear, constant or WSD (warmup-stable-decay: the peak lr until the "
                              "last lr_wsd_decay_iters of lr_decay_iters, then down to optimizer.min_lr)",
                              megatron="--lr-decay-style")
    lr_wsd_decay_iters: int | None = opt(None, "WSD: steps of the final decay", megatron="--lr-wsd-decay-iters")
    lr_wsd_decay_style: str = opt("linear", "WSD: shape of the final decay: linear, cosine, exponential or minus_sqrt",
                                  megatron="--lr-wsd-decay-style")
    anneal_iters: int | None = opt(
        None, "anneal stage: continue from checkpoint.load at that checkpoint's learning rate and decay it linearly "
        "to anneal_min_lr over this many steps (the first runs at the checkpoint's lr, the last at anneal_min_lr); "
        "replaces warm-up and decay. train_iters must be the checkpoint's iteration + anneal_iters (weights-only "
        "start: anneal_iters)")
    anneal_min_lr: float = opt(0.0, "anneal stage: the learning rate of its last step")
    anneal_start_lr: float | None = opt(None, "anneal stage: the lr to start from (default: the one the loaded "
                                        "checkpoint recorded; needed for tools/import_hf.py output)")
    exit_duration_minutes: float | None = opt(
        None, "run-time budget: once this many minutes have passed since start, save after the current step and "
        "exit 75 (resumable); set it below the job's time limit by a step plus a save",
        megatron="--exit-duration-in-mins")


@dataclass
class BatchSection:
    """Batch sizes; micro-batches per step = global / (micro × data-parallel size)."""

    micro_batch_size: int = opt(4, "sequences per micro-batch per data-parallel rank", megatron="--micro-batch-size")
    global_batch_size: int = opt(8, "sequences per optimizer step over all ranks", megatron="--global-batch-size")


@dataclass
class DataSection:
    """Training data: indexed datasets (or a JSON-lines corpus tokenised on first use)."""

    paths: list = opt(
        [], "indexed dataset prefixes (<prefix>.bin/.idx), optionally Megatron blend style: [w1, p1, w2, p2]",
        megatron="--data-path")
    corpus: str | None = opt(None, "JSON-lines corpus to tokenise into data.cache_dir when data.paths is empty")
    tokenizer_model: str | None = opt(
        None, "sentencepiece model (vocab size and EOD id come from it)", megatron="--tokenizer-model")
    cache_dir: str = opt("runs/data", "where a tokenised corpus is written")
    split: str = opt("98,2,0", "train,valid,test weights", megatron="--split")
    seq_length: int | None = opt(None, "tokens per sequence (default: the size's)", megatron="--seq-length")
    intra_document_attention: bool = opt(True, "attend only within a document (reset positions and attention at EOD)")


@dataclass
class EvalSection:
    """Validation loss on the held-out split."""

    interval: int = opt(50, "validation every N steps (0: only at the end)", megatron="--eval-interval")
    iters: int = opt(2, "validation micro-batch rounds", megatron="--eval-iters")


@dataclass
class LoggingSection:
    """Console, TensorBoard and metrics file."""

    log_interval: int = opt(10, "console log every N steps", megatron="--log-interval")
    tensorboard_dir: str | None = opt(
        None, "TensorBoard event directory (written by the last rank)", megatron="--tensorboard-dir")
    per_layer_logging: bool = opt(True, "also write moe/<metric>_layer_<i> scalars", megatron="--moe-per-layer-logging")
    metrics_file: str | None = opt(None, "JSON-lines file with every step's scalars (exact floats; used by tests)")
    peak_tflops: float | None = opt(None, "per-device peak TFLOP/s for MFU (default: known GPUs; none on CPU)")


@dataclass
class CheckpointSection:
    """Megatron dist_checkpointing (torch_dist) checkpoints, written atomically."""

    save: str | None = opt(
        None, "checkpoint directory (iter_XXXXXXX sub-folders + latest_checkpointed_iteration.txt)", megatron="--save")
    save_interval: int = opt(0, "save every N steps (0: only at the end and on SIGTERM)", megatron="--save-interval")
    load: str | None = opt(None, "initial state of a fresh run: this directory's latest checkpoint (or an iter_XXXXXXX "
                           "folder); a checkpoint in checkpoint.save always wins (resume after preemption)",
                           megatron="--load")
    finetune: bool = opt(False, "load only the model weights from checkpoint.load; iteration, optimizer, data position "
                         "and RNG start fresh (automatic for weights-only checkpoints such as tools/import_hf.py's)",
                         megatron="--finetune")
    allow_missing_load: bool = opt(False, "train from scratch when checkpoint.load does not exist or holds no "
                                   "checkpoint, instead of refusing the run")
    keep_last_n: int = opt(0, "keep only the newest N iter_* folders in checkpoint.save (0: keep all); the newest and "
                           "the one this run started from are never deleted")


@dataclass
class PlanSection:
    """Memory planner (``emo-pretrain --dry-run``) and the fit check that runs before GPU training."""

    world_size: int | None = opt(
        None, "GPUs emo-pretrain --dry-run plans for (default: the launcher's WORLD_SIZE or SLURM_NTASKS); training "
        "checks the world size it was launched with")
    device_memory_gib: float = opt(80.0, "memory of one accelerator in GiB (H100 SXM: 80)")
    reserved_gib: float = opt(6.0, "GiB kept free for the CUDA context, NCCL buffers and allocator fragmentation")
    skip_fit_check: bool = opt(False, "train even if the planner estimates that a GPU layout does not fit")


@dataclass
class TrainingConfig:
    """The whole run."""

    model: ModelSection = field(default_factory=ModelSection)
    emo: EmoSection = field(default_factory=EmoSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    precision: PrecisionSection = field(default_factory=PrecisionSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    batch: BatchSection = field(default_factory=BatchSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    plan: PlanSection = field(default_factory=PlanSection)
    seed: int = opt(1234, "seed of initialisation, data order and EMO pool draws", megatron="--seed")
    nan_policy: str = opt(
        "stop", "non-finite loss or grad norm: 'stop' (error naming the iteration) or 'skip' the step")
    nan_max_skipped_fraction: float = opt(0.1, "with nan_policy=skip: exit 3 at the end if more than this share of "
                                          "the steps was skipped")


SECTIONS = {
    f.name: f.default_factory for f in dataclasses.fields(TrainingConfig) if dataclasses.is_dataclass(f.default_factory)
}


@functools.cache
def field_types(section_cls) -> dict[str, Any]:
    return typing.get_type_hints(section_cls)


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_split(split: str) -> tuple[float, float, float]:
    """``data.split`` as three non-negative finite weights, or ``ConfigError`` naming the field."""
    parts = [p.strip() for p in str(split).split(",")]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) != 3 or not all(w >= 0 and w != float("inf") for w in weights):
        raise ConfigError(f"data.split={split!r}: expected three comma-separated weights >= 0 'train,valid,test', "
                          "e.g. '98,2,0'")
    return weights


def set_value(cfg: TrainingConfig, key: str, value: Any) -> None:
    """Set ``section.field`` (or a top-level field) from a raw value, with type coercion."""
    parts = key.split(".")
    target = cfg
    if len(parts) == 2:
        if parts[0] not in SECTIONS:
            hint = _did_you_mean(parts[0], SECTIONS) or f"; sections: {', '.join(SECTIONS)}"
            raise ConfigError(f"{key}: unknown section {parts[0]!r}{hint}")
        target = getattr(cfg, parts[0])
    elif len(parts) != 1 or parts[0] in SECTIONS:
        raise ConfigError(f"{key}: expected 'section.field' or a top-level field")
    types = field_types(type(target))
    if parts[-1] not in types:
        hint = _did_you_mean(parts[-1], types) or f"; {type(target).__name__} has {', '.join(types)}"
        raise ConfigError(f"{key}: unknown field{hint}")
    setattr(target, parts[-1], coerce(value, types[parts[-1]], key))


def apply_mapping(cfg: TrainingConfig, mapping: dict, source: str) -> None:
    """Apply a nested mapping (a parsed YAML file) onto ``cfg``."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(mapping).__name__}")
    for name, value in mapping.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section {name!r} must be a mapping")
            for key, inner in value.items():
                set_value(cfg, f"{name}.{key}", inner)
        else:
            set_value(cfg, name, value)


def to_dict(cfg: TrainingConfig) -> dict:
    return dataclasses.asdict(cfg)
