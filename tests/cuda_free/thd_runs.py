"""Intra-document attention through the GPU path's own machinery, in the gloo ranks of tests/parallel/harness.py.

``intra_document_run`` trains like ``backend_runs.train_run`` with ``data.intra_document_attention`` on: the host
backend gets the dense block-diagonal mask (what the CPU path uses), ``MegatronBackend`` (under ``cuda_free()``)
gets the trainer's thd packing (``thd_packing_for_run`` + ``get_micro_batch(packing=...)``), so the packed
``[1, b·s]`` micro-batches go through its schedules (micro-batch size 1, the packed length for the p2p shape)
into ``GPTModel.forward(packed_seq_params=...)``. The only stand-in is the core attention
(``tests/thd_reference.py``): TE's thd attention needs a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch

from tests.cuda_free.backend_runs import SEQ, _full_parameters, build_config, synthetic_dataset
from tests.helpers import resolved


def _with_dense_masks(dataset: list[dict]) -> list[dict]:
    """The host path's intra-document mask per sample ([1, s, s], True = masked), from the document ids."""
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    for sample in dataset:
        doc = sample["doc_ids"]
        sample["attention_mask"] = ~((doc[:, None] == doc[None, :]) & causal)[None]
    return dataset


def intra_document_run(layout, device: str, overrides: dict, steps: int, full_state) -> dict:
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    from emo_plugin.training.data import get_micro_batch, sample_indices
    from emo_plugin.training.distributed import initialize_model_parallel
    from emo_plugin.training.packed_sequences import thd_packing_for_run
    from tests.cuda_free.cuda_shims import cuda_free
    from tests.parallel.harness import full_name, load_from_single_rank
    from tests.thd_reference import with_thd_reference_attention

    cfg = build_config(device, {**overrides, "data.intra_document_attention": True})
    with cuda_free() if device == "cuda" else contextlib.nullcontext():
        initialize_model_parallel(cfg)
        get_moe_metrics_tracker().clear()
        torch.manual_seed(cfg.seed)
        # thd packing on the local spec, whose attention with_thd_reference_attention replaces below: validation
        # refuses that pairing for users, so resolve without intra-document attention and set the mode here
        plain = copy.deepcopy(cfg)
        plain.data.intra_document_attention = False
        run = dataclasses.replace(resolved(plain, dist.get_world_size()), config=cfg,
                                  attention="thd" if device == "cuda" else "dense_mask")
        transformer_config = run.transformer_config
        if device == "cuda":
            from emo_plugin.training.megatron_backend import MegatronBackend as Backend
        else:
            from emo_plugin.training.host_backend import HostBackend as Backend
        backend = Backend(run)
        modules = [m.module for m in backend.model] if device == "cuda" else [backend.model]
        for module in modules:
            load_from_single_rank(module, full_state)
            with_thd_reference_attention(module)
        if device == "cuda":
            backend.optimizer.reload_model_params()
        packing = thd_packing_for_run(run)
        assert (packing is not None) == (device == "cuda")

        b = cfg.batch
        dp_size, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        num_micro = b.global_batch_size // (b.micro_batch_size * dp_size)
        dataset = _with_dense_masks(synthetic_dataset((steps + 1) * b.global_batch_size))
        target = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")

        def micro_batches(consumed: int) -> list[dict]:
            return [
                get_micro_batch(dataset, sample_indices(consumed, m, b.micro_batch_size, dp_rank, dp_size),
                                seed=cfg.seed, max_docs=transformer_config.emo.max_documents_per_sequence,
                                device=target, packing=packing)
                for m in range(num_micro)
            ]

        first = micro_batches(0)[0]
        shape = tuple(first["tokens"].shape)
        records = [backend.train_step(micro_batches(step * b.global_batch_size), step + 1, cfg.nan_policy)
                   for step in range(steps)]
        valid_loss = backend.eval_loss(micro_batches(steps * b.global_batch_size))
        if device == "cuda":
            backend._sync_params()
        final = {k: v for m in modules for k, v in _full_parameters(m, full_name).items()}
        dist.barrier()
    return dict(records=records, final=final, valid_loss=valid_loss, shape=shape,
                packed="packed_seq_params" in first, pp_rank=ps.get_pipeline_model_parallel_rank())
