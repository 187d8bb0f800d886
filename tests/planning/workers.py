"""Functions the planner tests run inside ``tests/parallel/harness.py`` ranks (module level, picklable)."""

from __future__ import annotations

import contextlib

import torch

from tests.helpers import resolved, run_record


def run_config(size_name: str, layout, overrides: dict | None = None):
    """The ``TrainingConfig`` of a named size on a harness layout, as the trainer would set it."""
    from emo_plugin.run.config import TrainingConfig, set_value

    cfg = TrainingConfig()
    cfg.model.size = size_name
    cfg.parallel.tensor_model_parallel_size = layout.tp
    cfg.parallel.pipeline_model_parallel_size = layout.pp
    cfg.parallel.expert_model_parallel_size = layout.ep
    cfg.parallel.context_parallel_size = layout.cp
    cfg.parallel.sequence_parallel = layout.sequence_parallel
    cfg.parallel.expert_tensor_parallel_size = layout.tp  # the harness leaves Megatron's default ETP = TP
    for key, value in (overrides or {}).items():
        set_value(cfg, key, value)
    return cfg


def built_parameter_counts(layout, specs: list[dict]) -> list[dict]:
    """Per spec ``{size, vocab, meta, overrides}``: this rank's built model, parameters split dense / expert."""
    from megatron.core import parallel_state as ps

    from emo_plugin.model.build import build_emo_gpt_model
    from emo_plugin.run.transformer import build_transformer_config

    results = []
    for spec in specs:
        cfg = run_config(spec["size"], layout, spec.get("overrides"))
        config = build_transformer_config(cfg, run_record(cfg), "cpu")
        with torch.device("meta") if spec["meta"] else contextlib.nullcontext():
            model = build_emo_gpt_model(
                config,
                vocab_size=spec["vocab"],
                max_sequence_length=run_record(cfg).seq_length,
                use_transformer_engine=False,
                host_execution=True,
                pre_process=ps.is_pipeline_first_stage(),
                post_process=ps.is_pipeline_last_stage(),
            )
        expert = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
        total = sum(p.numel() for p in model.parameters())
        results.append({"stage": ps.get_pipeline_model_parallel_rank(), "dense": total - expert, "expert": expert})
        del model
    return results


def measured_host_memory(layout, micro_batch_size: int, seq_length: int, vocab: int) -> dict:
    """Bytes the CPU trainer's ``HostBackend`` holds for the tiny model after one micro-batch and one step.

    Activations: every tensor autograd saves for backward during the forward (distinct storages, parameters
    excluded), recorded with ``torch.autograd.graph.saved_tensors_hooks``.
    """
    from emo_plugin.moe.routing_ids import build_routing_ids
    from emo_plugin.training.host_backend import HostBackend, forward

    cfg = run_config("tiny", layout, {"data.seq_length": seq_length, "model.vocab_size": vocab})
    torch.manual_seed(0)
    backend = HostBackend(resolved(cfg, torch.distributed.get_world_size()))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, vocab, (micro_batch_size, seq_length), generator=gen)
    tokens[torch.rand(micro_batch_size, seq_length, generator=gen) < 0.02] = 0  # document boundaries (EOD = 0)
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=0, padding_BS=torch.zeros_like(tokens, dtype=torch.bool),
                            max_documents_per_sequence=64, generator=gen)
    batch = {"tokens": tokens, "position_ids": torch.arange(seq_length).expand_as(tokens), "labels": tokens,
             "routing_ids": ids}
    params = list(backend.model.parameters())
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward(backend.model, batch).mean()
    loss.backward()
    backend.optimizer.step()
    optimizer = sum(t.numel() * t.element_size() for state in backend.optimizer.state.values()
                    for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    return {
        "parameters": sum(p.numel() * p.element_size() for p in params),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
        "optimizer": optimizer,
        "activations": sum(saved.values()),
    }


def megatron_state_bytes(backend) -> dict:
    """Bytes ``MegatronBackend`` holds on this rank: model parameters, DDP gradient buffers, optimizer state.

    A ``probe`` for ``tests/cuda_free/backend_runs.train_run`` (runs right after the backend is built). Adam's
    moments appear at the first step; Megatron's own ``init_state_fn`` (what checkpoint loading uses) allocates
    them here so they are measured, not assumed. Main parameters: the optimizer's fp32 shards that are not views
    of the model's own parameters (with fp32 parameters the distributed optimizer updates them in place).
    """
    def nbytes(t):
        return t.numel() * t.element_size()

    model_params = [p for chunk in backend.model for p in chunk.module.parameters()]
    model_storages = {p.untyped_storage().data_ptr() for p in model_params}
    grads = sum(nbytes(buffer.grad_data) for chunk in backend.model
                for buffer in [*chunk.buffers, *chunk.expert_parallel_buffers])
    optimizer = 0
    for opt in getattr(backend.optimizer, "chained_optimizers", [backend.optimizer]):
        opt.init_state_fn(opt.optimizer, opt.config)
        for group in opt.optimizer.param_groups:
            optimizer += sum(nbytes(p) for p in group["params"] if p.untyped_storage().data_ptr() not in model_storages)
        optimizer += sum(nbytes(t) for state in opt.optimizer.state.values() for t in state.values()
                         if torch.is_tensor(t) and t.dim() > 0)
    return {"parameters": sum(nbytes(p) for p in model_params), "gradients": grads, "optimizer": optimizer}


def megatron_activation_bytes(backend, micro_batch_size: int) -> int:
    """Bytes autograd saves during one micro-batch's forward of ``MegatronBackend``'s model (a ``train_run``
    probe; parameters and DDP buffers excluded), on the synthetic data of ``tests/cuda_free/backend_runs``."""
    from emo_plugin.training.data import get_micro_batch
    from emo_plugin.training.host_backend import forward
    from tests.cuda_free.backend_runs import synthetic_dataset

    chunk = backend.model[0]
    batch = get_micro_batch(synthetic_dataset(micro_batch_size), list(range(micro_batch_size)), seed=0,
                            max_docs=chunk.config.emo.max_documents_per_sequence, device=torch.device("cpu"))
    excluded = {p.untyped_storage().data_ptr() for p in chunk.module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    chunk.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(chunk, batch)
    return sum(saved.values())
