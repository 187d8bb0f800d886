"""The plan of one run: per pipeline stage (ranks of a stage are alike) parameters, memory, traffic; FLOPs.

``make_plan(run)`` reads only the resolved run (``emo_plugin/run/resolve.py``): the model record with the
vocabulary the trainer builds, the layout, the device and the batch arithmetic, so the plan and the trainer
cannot disagree about the run. FLOPs per step come from the trainer's own MFU formula (``emo_plugin.run.flops``).
"""

from __future__ import annotations

from dataclasses import dataclass

from emo_plugin.model.record import ModelRecord
from emo_plugin.planning.activations import FUSED_GPU, HOST, LOCAL_GPU, ActivationMemory, activation_memory
from emo_plugin.planning.communication import Collective, communication
from emo_plugin.planning.model_states import ModelStates, model_states
from emo_plugin.planning.parameters import ParameterCount, layers_per_stage, stage_parameters
from emo_plugin.run.flops import flops_per_token
from emo_plugin.run.layout import Layout
from emo_plugin.run.resolve import ResolvedRun

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


def make_plan(run: ResolvedRun) -> Plan:
    """Memory, communication and FLOPs per rank of ``run``, stage by stage."""
    cfg, record, layout = run.config, run.record, run.layout
    b = cfg.batch
    num_micro = run.num_micro_batches
    elem = 2 if cfg.precision.dtype == "bf16" else 4
    backend = "megatron" if run.device == "cuda" else "host"
    distributed = cfg.optimizer.use_distributed_optimizer and backend == "megatron"
    layers = layers_per_stage(record, layout)
    virtual_stages = cfg.parallel.virtual_pipeline_model_parallel_size or 1
    implementation = HOST
    if backend == "megatron":
        implementation = FUSED_GPU if run.transformer_engine else LOCAL_GPU
    vocab = run.vocab_size
    stages = []
    for stage in range(layout.pp):
        params = stage_parameters(record, vocab, layout, stage)
        states = model_states(params, layout, backend=backend, param_bytes=elem, distributed_optimizer=distributed)
        acts = activation_memory(record, vocab, layout, stage=stage, micro_batch_size=b.micro_batch_size,
                                 num_micro_batches=num_micro, layers=layers,
                                 impl=implementation, elem=elem,
                                 virtual_stages=virtual_stages, dense_mask=run.attention == "dense_mask")
        comms = communication(record, layout, params, stage=stage, layers=layers, micro_batch_size=b.micro_batch_size,
                              num_micro_batches=num_micro, elem=elem, distributed_optimizer=distributed,
                              param_bytes=elem, virtual_stages=virtual_stages)
        stages.append(StagePlan(stage, layers, params, states, acts, cfg.model.recompute_moe, comms))
    return Plan(
        record=record,
        size_name=cfg.model.size,
        vocab_size=vocab,
        vocab_source=run.vocab_source,
        layout=layout,
        device=run.device,
        micro_batch_size=b.micro_batch_size,
        global_batch_size=b.global_batch_size,
        num_micro_batches=num_micro,
        virtual_stages=virtual_stages,
        implementation=implementation.name,
        stages=stages,
        flops_per_step=flops_per_token(record, vocab, record.seq_length) * b.global_batch_size * record.seq_length,
        device_memory=int(cfg.plan.device_memory_gib * GIB),
        reserved=int(cfg.plan.reserved_gib * GIB),
    )
