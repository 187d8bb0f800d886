"""The ``layer`` step of ``tools/gpu_check.py``: Transformer Engine spec vs local spec for an EMO model.

Both models come from the product's builders (``resolve`` with ``model.transformer_impl`` set
to ``transformer_engine`` / ``local``, ``build_emo_gpt_model``); the TE model's weights reach the local one
through a distributed checkpoint (Megatron maps TE's fused-norm names to the local spec's). One training-mode
forward + backward each, on the same micro-batch with EMO routing ids:

* causal attention: TE (sbhd) vs local;
* intra-document attention: TE with thd ``PackedSeqParams`` from ``packed_sequences.py`` vs the local spec
  with the dense block-diagonal mask the host path uses (built here from the document ids, independently).

Dry run (CPU, no TE): both sides are the host model, so the same hand-over and comparisons run; the thd and
TE-index parts are recorded as skipped.
"""

from __future__ import annotations

import os
import tempfile
import traceback

import torch

from emo_plugin.free_port import free_port


def _config(dry_run: bool, impl: str):
    from emo_plugin.run.config import TrainingConfig, set_value

    cfg = TrainingConfig()
    values = {
        "model.size": "tiny" if dry_run else "small",
        "model.num_layers": 2,
        "data.seq_length": 64 if dry_run else 1024,
        "parallel.device": "cpu" if dry_run else "cuda",
        "precision.dtype": "fp32" if dry_run else "bf16",
        "emo.max_documents_per_sequence": 64,
    }
    if not dry_run:  # the dry run builds the host model for both sides
        values["model.transformer_impl"] = impl
    for key, value in values.items():
        set_value(cfg, key, value)
    return cfg


def _micro_batch(b: int, s: int, vocab: int, device: str) -> dict:
    """Random tokens in documents of random length; the host path's dense mask and reset positions."""
    from emo_plugin.moe.routing_ids import build_routing_ids

    gen = torch.Generator().manual_seed(7)
    doc_ids = torch.cumsum(torch.rand(b, s, generator=gen) < 4.0 / s * 2, 1) + 1
    tokens = torch.randint(1, vocab, (b, s + 1), generator=gen)
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    starts = torch.ones(b, s, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    positions = torch.arange(s) - torch.cummax(torch.where(starts, torch.arange(s), 0), 1).values
    return {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:].contiguous(),
        "loss_mask": torch.ones(b, s),
        "position_ids": positions,
        "doc_ids": doc_ids,
        "attention_mask": ~(same_doc & causal)[:, None],
        "routing_ids": build_routing_ids(doc_ids_BS=doc_ids, max_documents_per_sequence=64, generator=gen),
    }


def _loss_and_grad_norm(model, batch: dict, device: str) -> tuple[torch.Tensor, float]:
    from emo_plugin.training.host_backend import forward, lm_loss

    model.zero_grad(set_to_none=True)
    moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    per_token = forward(model, moved)
    lm_loss(per_token, moved["loss_mask"]).backward()
    norm = torch.sqrt(sum(p.grad.float().pow(2).sum() for p in model.parameters() if p.grad is not None))
    return per_token.detach().float().cpu(), float(norm)


def _compare(name: str, a: torch.Tensor, b: torch.Tensor, norm_a: float, norm_b: float) -> dict:
    from gpu_check import LAYER_GRAD_NORM_RTOL, LAYER_LOSS_RTOL, check, rel

    a, b = a.reshape(-1), b.reshape(-1)
    return {
        "figures": {
            f"{name}_mean_loss_te": float(a.mean()),
            f"{name}_mean_loss_local": float(b.mean()),
            f"{name}_max_token_loss_diff": float((a - b).abs().max()),
            f"{name}_grad_norm_te": norm_a,
            f"{name}_grad_norm_local": norm_b,
        },
        "checks": {
            f"{name}_mean_loss_rel": check(rel(float(a.mean()), float(b.mean())), LAYER_LOSS_RTOL),
            f"{name}_grad_norm_rel": check(rel(norm_a, norm_b), LAYER_GRAD_NORM_RTOL),
        },
    }


def layer_check(dry_run: bool) -> dict:
    import torch.distributed as dist
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.build import build_emo_gpt_model
    from emo_plugin.run.resolve import resolve
    from emo_plugin.training.packed_sequences import (
        ThdPacking,
        cp_partition_index,
        pack_micro_batch,
        packed_layout,
        packed_seq_params,
    )

    device = "cpu" if dry_run else "cuda"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    if not dry_run:
        torch.cuda.set_device(0)
    dist.init_process_group("gloo" if dry_run else "nccl", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    if not dry_run:
        model_parallel_cuda_manual_seed(0)
    torch.manual_seed(0)

    models = {}
    for impl in ("transformer_engine", "local"):
        cfg = _config(dry_run, impl)
        run = resolve(cfg, 1, planning_only=True)  # this script checks its own inputs
        model = build_emo_gpt_model(run.transformer_config, vocab_size=run.vocab_size,
                                    max_sequence_length=run.seq_length,
                                    use_transformer_engine=impl == "transformer_engine" and not dry_run,
                                    host_execution=dry_run)
        models[impl] = model.to(device).train()
    with tempfile.TemporaryDirectory() as folder:
        strategy = HostTorchDistSaveStrategy() if dry_run else None
        dist_checkpointing.save(models["transformer_engine"].sharded_state_dict(prefix=""), folder,
                                sharded_strategy=strategy)
        loaded = dist_checkpointing.load(models["local"].sharded_state_dict(prefix=""), folder)
        models["local"].load_state_dict(loaded, strict=False)
    te_params = {n: p.detach().float().cpu() for n, p in models["transformer_engine"].named_parameters()}
    local_params = sum(p.numel() for p in models["local"].parameters())
    if sum(t.numel() for t in te_params.values()) != local_params:
        raise RuntimeError("TE and local models have different parameter counts")

    model_record = resolve(_config(dry_run, "local"), 1, planning_only=True).record
    batch = _micro_batch(2, model_record.seq_length, model_record.vocab_size, device)
    causal = {k: v for k, v in batch.items() if k != "attention_mask"}
    causal["position_ids"] = torch.arange(model_record.seq_length).expand_as(batch["tokens"])
    te_loss, te_norm = _loss_and_grad_norm(models["transformer_engine"], causal, device)
    local_loss, local_norm = _loss_and_grad_norm(models["local"], causal, device)
    record = _compare("causal", te_loss, local_loss, te_norm, local_norm)
    record["figures"]["parameters"] = local_params

    skipped = []
    if dry_run:
        skipped.append("thd intra-document attention and the TE CP index need Transformer Engine on a GPU")
    else:  # each part guarded: a failure is recorded next to the results of the others
        try:
            packed, cu_seqlens, max_seqlen = pack_micro_batch(dict(batch), ThdPacking(max_documents=64))
            packed = {k: v.to(device) for k, v in packed.items()}
            packed["packed_seq_params"] = packed_seq_params(cu_seqlens.to(device), max_seqlen)
            thd_loss, thd_norm = _loss_and_grad_norm(models["transformer_engine"], packed, device)
            dense_loss, dense_norm = _loss_and_grad_norm(models["local"], batch, device)
            intra = _compare("intra_document", thd_loss, dense_loss, thd_norm, dense_norm)
            record["figures"].update(intra["figures"], documents=len(cu_seqlens) - 1, max_seqlen=max_seqlen)
            record["checks"].update(intra["checks"])
        except Exception:  # noqa: BLE001
            record.update(status="failed", intra_document_error=traceback.format_exc())
        try:
            record["checks"]["cp_index_matches_te"] = _te_cp_index_check(batch, packed_layout, cp_partition_index)
        except Exception:  # noqa: BLE001
            record.update(status="failed", cp_index_error=traceback.format_exc())
    if skipped:
        record["skipped_parts"] = skipped
    dist.destroy_process_group()
    return record


def _te_cp_index_check(batch: dict, packed_layout, cp_partition_index) -> dict:
    """This package's zigzag index (host) vs TE's ``thd_get_partitioned_indices`` (GPU) for CP 2 and 4."""
    import transformer_engine_torch as tex
    from gpu_check import check

    from emo_plugin.training.packed_sequences import ThdPacking

    mismatches = 0
    for cp in (2, 4):
        _, cu, _ = packed_layout(dict(batch), ThdPacking(max_documents=64, context_parallel_size=cp))
        for rank in range(cp):
            theirs = tex.thd_get_partitioned_indices(cu.to(torch.int32).cuda(), int(cu[-1]), cp, rank).long().cpu()
            mismatches += int(not torch.equal(theirs, cp_partition_index(cu, cp, rank)))
    return check(float(mismatches), 0.0)
