"""The plan of one run: per pipeline stage (ranks of a stage are alike) parameters, memory, traffic; FLOPs.

``make_plan(cfg, world_size)`` uses only the config: the model size with its overrides, the vocabulary (the
configured one, else the tokenizer's, else the size's, padded like the trainer pads it), the layout and the
batch. FLOPs per step come from the trainer's own MFU formula (``emo_plugin.training.flops``).
"""

from __future__ import annotations

from dataclasses import dataclass

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord
from emo_plugin.planning.activations import FUSED_GPU, HOST, LOCAL_GPU, ActivationMemory, activation_memory
from emo_plugin.planning.communication import Collective, communication
from emo_plugin.planning.layout import Layout
from emo_plugin.planning.model_states import ModelStates, model_states
from emo_plugin.planning.parameters import ParameterCount, layers_per_stage, stage_parameters
from emo_plugin.training.builders import padded_vocab_size, resolve_device, resolved_record
from emo_plugin.training.config import TrainingConfig
from emo_plugin.training.flops import flops_per_token

GIB = 1024**3


@dataclass(frozen=True)
class StagePlan:
    """One rank of pipeline stage ``stage`` (every rank of a stage holds the same amounts)."""

    stage: int
    layers: int
    parameters: ParameterCount
    states: ModelStates
    activations: ActivationMemory
    recompute: bool
    collectives: list[Collective]

    @property
    def activation_peak(self) -> int:
        return self.activations.peak_recompute if self.recompute else self.activations.peak

    @property
    def total(self) -> int:
        return self.states.total + self.activation_peak


@dataclass(frozen=True)
class Plan:
    record: ModelRecord
    size_name: str
    vocab_size: int
    vocab_source: str
    layout: Layout
    device: str
    micro_batch_size: int
    global_batch_size: int
    num_micro_batches: int
    virtual_stages: int
    implementation: str
    stages: list[StagePlan]
    flops_per_step: float
    device_memory: int
    reserved: int

    @property
    def worst(self) -> StagePlan:
        return max(self.stages, key=lambda s: s.total)

    @property
    def available(self) -> int:
        return self.device_memory - self.reserved

    @property
    def fits(self) -> bool:
        return self.worst.total <= self.available


def plan_vocab_size(cfg: TrainingConfig, size: ModelRecord) -> tuple[int, str]:
    """The vocabulary the trainer would build, and where it comes from."""
    tp = cfg.parallel.tensor_model_parallel_size
    if cfg.model.vocab_size:
        return cfg.model.vocab_size, "model.vocab_size"
    if cfg.data.tokenizer_model:
        from emo_plugin.data.tokenizer import EmoTokenizer
        from emo_plugin.errors import DataError

        try:
            tokenizer = EmoTokenizer(cfg.data.tokenizer_model)
        except DataError as error:
            raise ConfigError(f"data.tokenizer_model={cfg.data.tokenizer_model!r}: {error}") from None
        return padded_vocab_size(tokenizer.vocab_size, tp), "tokenizer, padded"
    return padded_vocab_size(size.vocab_size, tp), f"size {cfg.model.size}, padded (no data.tokenizer_model)"


def _check_budget(cfg: TrainingConfig) -> None:
    memory, reserved = cfg.plan.device_memory_gib, cfg.plan.reserved_gib
    if not memory > 0:
        raise ConfigError(f"plan.device_memory_gib={memory!r}: expected the accelerator's memory in GiB, > 0")
    if not 0 <= reserved < memory:
        raise ConfigError(f"plan.reserved_gib={reserved!r}: expected >= 0 and below plan.device_memory_gib={memory}")


def make_plan(cfg: TrainingConfig, world_size: int) -> Plan:
    _check_budget(cfg)
    size = resolved_record(cfg)
    vocab, vocab_source = plan_vocab_size(cfg, size)
    layout = Layout.from_config(cfg, world_size)
    device = resolve_device(cfg)
    b = cfg.batch
    if b.global_batch_size % (b.micro_batch_size * layout.dp):
        raise ConfigError(f"batch.global_batch_size={b.global_batch_size}: expected a multiple of micro_batch_size × "
                          f"data-parallel size = {b.micro_batch_size} × {layout.dp}")
    num_micro = b.global_batch_size // (b.micro_batch_size * layout.dp)
    elem = 2 if cfg.precision.dtype == "bf16" else 4
    backend = "megatron" if device == "cuda" else "host"
    distributed = cfg.optimizer.use_distributed_optimizer and backend == "megatron"
    layers = layers_per_stage(size, layout)
    virtual_stages = getattr(cfg.parallel, "virtual_pipeline_model_parallel_size", None) or 1
    implementation = HOST
    if backend == "megatron":
        te = getattr(cfg.model, "transformer_impl", "transformer_engine") == "transformer_engine"
        implementation = FUSED_GPU if te else LOCAL_GPU
    stages = []
    for stage in range(layout.pp):
        params = stage_parameters(size, vocab, layout, stage)
        states = model_states(params, layout, backend=backend, param_bytes=elem, distributed_optimizer=distributed)
        acts = activation_memory(size, vocab, layout, stage=stage, micro_batch_size=b.micro_batch_size,
                                 num_micro_batches=num_micro, layers=layers,
                                 impl=implementation, elem=elem,
                                 virtual_stages=virtual_stages)
        comms = communication(size, layout, params, stage=stage, layers=layers, micro_batch_size=b.micro_batch_size,
                              num_micro_batches=num_micro, elem=elem, distributed_optimizer=distributed,
                              param_bytes=elem, virtual_stages=virtual_stages)
        stages.append(StagePlan(stage, layers, params, states, acts, cfg.model.recompute_moe, comms))
    return Plan(
        record=size,
        size_name=cfg.model.size,
        vocab_size=vocab,
        vocab_source=vocab_source,
        layout=layout,
        device=device,
        micro_batch_size=b.micro_batch_size,
        global_batch_size=b.global_batch_size,
        num_micro_batches=num_micro,
        virtual_stages=virtual_stages,
        implementation=implementation.name,
        stages=stages,
        flops_per_step=flops_per_token(size, vocab, size.seq_length) * b.global_batch_size * size.seq_length,
        device_memory=int(cfg.plan.device_memory_gib * GIB),
        reserved=int(cfg.plan.reserved_gib * GIB),
    )
