"""Training steps of the product's backends inside the gloo ranks of tests/parallel/harness.py.

``train_run`` (a rank worker) builds the run's config, Megatron parallel state, transformer config and backend
exactly as ``Trainer`` does (``device='cuda'``: ``MegatronBackend`` under ``cuda_free()``; ``'cpu'``:
``HostBackend``), loads the 1-rank reference weights into this rank's partition, and takes optimizer steps on
micro-batches cut from one fixed synthetic dataset with the trainer's own sample arithmetic and
``get_micro_batch``. It returns what equivalence tests compare: per-step loss, grad norm, learning rate and the
final parameters under their 1-rank names.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from tests.helpers import resolved

REPO = Path(__file__).resolve().parents[2]
VOCAB = 128
SEQ = 32
EOD = 0


def base_overrides(**overrides) -> dict:
    """The tiny model on short sequences: what every equivalence case starts from (dotted keys)."""
    values = {
        "model.size": "tiny",
        "model.transformer_impl": "local",
        "data.seq_length": SEQ,
        "data.intra_document_attention": False,
        "model.vocab_size": VOCAB,
        "data.paths": "unused",
        "batch.micro_batch_size": 2,
        "batch.global_batch_size": 8,
        "optimizer.lr": 1e-2,
        "optimizer.min_lr": 1e-3,
        "optimizer.weight_decay": 0.1,
        "optimizer.clip_grad": 1.0,
        "schedule.train_iters": 3,
        "schedule.lr_warmup_iters": 1,
        "schedule.lr_decay_iters": 4,
        "emo.max_documents_per_sequence": 16,
    }
    values.update(overrides)
    return values


def synthetic_dataset(num_samples: int, seed: int = 0) -> list[dict]:
    """GPTDataset-like samples: EOD-separated documents, next-token labels, document ids."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (num_samples, SEQ + 1), generator=gen)
    tokens[torch.rand(num_samples, SEQ + 1, generator=gen) < 0.12] = EOD
    samples = []
    for row in tokens:
        text = row[:-1]
        doc_ids = torch.cumsum((text == EOD).long(), 0) - (text == EOD).long()  # EOD closes its document
        samples.append(
            dict(
                tokens=text.clone(),
                labels=row[1:].clone(),
                loss_mask=torch.ones(SEQ),
                position_ids=torch.arange(SEQ),
                doc_ids=doc_ids,
            )
        )
    return samples


def build_config(device: str, overrides: dict):
    from emo_plugin.run.config import TrainingConfig, set_value

    cfg = TrainingConfig()
    for key, value in {**base_overrides(**overrides), "parallel.device": device}.items():
        set_value(cfg, key, value)
    return cfg


def _full_parameters(model, full_name) -> dict:
    return {full_name(model, n): p.detach().clone() for n, p in model.named_parameters()}


def train_run(layout, device: str, overrides: dict, steps: int, full_state=None, probe=None, probe_kwargs=None,
              transformer_overrides=None, loss_mask: float = 1.0):
    """``steps`` optimizer steps of the backend for ``device``; see the module docstring. ``probe(backend, **kw)``
    (a module-level function) runs after construction and before training, for tests that look inside;
    ``transformer_overrides`` set fields of the built transformer config (e.g. the dispatcher type);
    ``loss_mask=0`` trains on a zero LM loss."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    from emo_plugin.training.data import get_micro_batch, sample_indices
    from emo_plugin.training.distributed import initialize_model_parallel
    from tests.cuda_free.cuda_shims import cuda_free
    from tests.parallel.harness import full_name, load_from_single_rank

    cfg = build_config(device, overrides)
    with cuda_free() if device == "cuda" else contextlib.nullcontext():
        initialize_model_parallel(cfg)
        get_moe_metrics_tracker().clear()
        torch.manual_seed(cfg.seed)
        run = resolved(cfg, dist.get_world_size())
        for key, value in (transformer_overrides or {}).items():
            setattr(run.transformer_config, key, value)
        if device == "cuda":
            from emo_plugin.training.megatron_backend import MegatronBackend as Backend
        else:
            from emo_plugin.training.host_backend import HostBackend as Backend
        backend = Backend(run)
        modules = [m.module for m in backend.model] if device == "cuda" else [backend.model]
        if full_state is not None:
            for module in modules:
                load_from_single_rank(module, full_state)
            if device == "cuda":
                backend.optimizer.reload_model_params()
        initial = {k: v for m in modules for k, v in _full_parameters(m, full_name).items()}
        extra = probe(backend, **(probe_kwargs or {})) if probe is not None else None

        b = cfg.batch
        dp_size = ps.get_data_parallel_world_size()
        dp_rank = ps.get_data_parallel_rank()
        num_micro = b.global_batch_size // (b.micro_batch_size * dp_size)
        dataset = synthetic_dataset(steps * b.global_batch_size + 2 * b.global_batch_size)
        for sample in dataset:
            sample["loss_mask"] *= loss_mask

        def micro_batches(consumed: int, torch_device: torch.device) -> list[dict]:
            return [
                get_micro_batch(
                    dataset,
                    sample_indices(consumed, m, b.micro_batch_size, dp_rank, dp_size),
                    seed=cfg.seed,
                    max_docs=run.transformer_config.emo.max_documents_per_sequence,
                    device=torch_device,
                )
                for m in range(num_micro)
            ]

        train_device = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        records = [
            backend.train_step(micro_batches(step * b.global_batch_size, train_device), step + 1, cfg.nan_policy)
            for step in range(steps)
        ]
        valid_loss = backend.eval_loss(micro_batches(steps * b.global_batch_size, torch.device("cpu")))
        if device == "cuda":
            backend._sync_params()
        final = {k: v for m in modules for k, v in _full_parameters(m, full_name).items()}
        dist.barrier()
    return dict(records=records, initial=initial, final=final, valid_loss=valid_loss, probe=extra,
                pp_rank=ps.get_pipeline_model_parallel_rank())
