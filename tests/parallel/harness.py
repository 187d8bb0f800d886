"""Multi-process CPU harness: run a function on N gloo ranks under a Megatron parallel layout.

``run_ranks(fn, world_size, layout, **kwargs)`` starts ``world_size`` processes, each of which applies the CPU
test shims (``tests/shims.py``), joins a fresh gloo group on a free port, calls
``parallel_state.initialize_model_parallel`` with the layout, runs ``fn(**kwargs)`` and saves its (tensor)
result; the parent returns the results in rank order. Workers are forked from a forkserver that has
imported torch + Megatron once, so a run costs ~1 s, not the ~7 s import.

``fn`` must be a module-level function. Arguments and results travel through ``torch.save`` files.

The rest of the module is shared test machinery: the tiny EMO config, building the model that matches the
layout, loading a 1-rank state dict into it (TP slicing, expert partitioning, pipeline layer offsets),
the gradient reduction that DDP + ``finalize_model_grads`` would do, and capturing router decisions.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch

from emo_plugin.free_port import free_port
from tests.mutation_support import merge_worker_hits, save_worker_hits

_PRELOAD = [
    "torch",
    "megatron.core.models.gpt.gpt_model",
    "megatron.core.transformer.moe.moe_layer",
    "emo_plugin.model.build",
    "tests.parallel.harness",
]
_CONTEXT = None


@dataclasses.dataclass(frozen=True)
class Layout:
    tp: int = 1
    ep: int = 1
    pp: int = 1
    cp: int = 1

    @property
    def sequence_parallel(self) -> bool:
        return self.tp > 1


SINGLE = Layout()


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(_PRELOAD)
    return _CONTEXT


def run_ranks(fn: Callable, world_size: int, layout: Layout = SINGLE, *, timeout: float = 120.0, **kwargs) -> list:
    """Results of ``fn(**kwargs)`` on every rank (rank order). Raises with the failing rank's traceback."""
    workdir = Path(tempfile.mkdtemp(prefix="emo_parallel_"))
    torch.save(
        {"module": fn.__module__, "name": fn.__qualname__, "sys_path": list(sys.path), "kwargs": kwargs},
        workdir / "job.pt",
    )
    port = free_port()
    procs = _start_workers(world_size, port, layout, workdir)
    deadline = time.monotonic() + timeout
    try:
        while any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    errors = sorted(workdir.glob("rank*.err"))
    if errors:
        raise RuntimeError("\n".join(f"--- {e.name}\n{e.read_text()}" for e in errors))
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"ranks timed out or died: exit codes {[p.exitcode for p in procs]}")
    merge_worker_hits(sorted(workdir.glob("rank*.hits.json")))
    return [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def _start_workers(world_size: int, port: int, layout: Layout, workdir: Path, start_timeout: float = 90.0) -> list:
    """Start the rank processes; if the forkserver stops answering, replace it once and try again.

    A forkserver that died (e.g. while importing its preload modules) leaves ``Process.start()`` waiting forever
    for a pid, which would hang the whole test session instead of failing one test.
    """
    for attempt in range(2):
        procs = [
            _context().Process(target=_worker, args=(rank, world_size, port, layout, str(workdir)), daemon=True)
            for rank in range(world_size)
        ]
        starter = threading.Thread(target=lambda: [p.start() for p in procs], daemon=True)
        starter.start()
        starter.join(start_timeout)
        if not starter.is_alive():
            return procs
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.kill()
        from multiprocessing import forkserver

        forkserver._forkserver._stop()  # the next Process.start() launches a fresh forkserver
    raise RuntimeError(f"the forkserver did not start {world_size} workers within {start_timeout:.0f} s, twice")


def _worker(rank: int, world_size: int, port: int, layout: Layout, workdir: str) -> None:
    workdir = Path(workdir)
    try:
        torch.set_num_threads(1)
        job = torch.load(workdir / "job.pt", weights_only=False)
        sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]
        from tests.shims import apply_cpu_shims

        apply_cpu_shims()
        from megatron.core import parallel_state

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
        )
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=layout.tp,
            pipeline_model_parallel_size=layout.pp,
            context_parallel_size=layout.cp,
            expert_model_parallel_size=layout.ep,
        )
        fn = getattr(importlib.import_module(job["module"]), job["name"])
        result = fn(layout=layout, **job["kwargs"])
        torch.save(result, workdir / f"rank{rank}.pt")
        save_worker_hits(workdir / f"rank{rank}.hits.json")
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()
    except BaseException:
        (workdir / f"rank{rank}.err").write_text(traceback.format_exc())
        os._exit(1)


# ---------------------------------------------------------------------------------------------------------
# Shared test machinery (runs inside workers)
# ---------------------------------------------------------------------------------------------------------
VOCAB = 64


def emo_config(layout: Layout = SINGLE, **overrides):
    """The tiny EMO config of tests/helpers.py for a parallel layout (fp32, no dropout, allgather)."""
    from tests.helpers import tiny_config

    return tiny_config(
        tensor_model_parallel_size=layout.tp,
        expert_model_parallel_size=layout.ep,
        pipeline_model_parallel_size=layout.pp,
        context_parallel_size=layout.cp,
        sequence_parallel=layout.sequence_parallel,
        pipeline_dtype=torch.float32,
        **overrides,
    )


def build_gpt(config, seq_len: int):
    from megatron.core import parallel_state

    from emo_plugin.model.build import build_emo_gpt_model

    return build_emo_gpt_model(
        config,
        vocab_size=VOCAB,
        max_sequence_length=seq_len,
        use_transformer_engine=False,
        host_execution=True,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
    )


def full_name(model: torch.nn.Module, name: str) -> str:
    """The 1-rank name of a local parameter: global layer index, global expert index."""
    from megatron.core import parallel_state

    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers") + 1
        layers = _find_layers(model)
        parts[i] = str(layers[int(parts[i])].layer_number - 1)
    if "local_experts" in parts:
        i = parts.index("local_experts") + 1
        experts_per_rank = model.config.num_moe_experts // parallel_state.get_expert_model_parallel_world_size()
        parts[i] = str(parallel_state.get_expert_model_parallel_rank() * experts_per_rank + int(parts[i]))
    return ".".join(parts)


def _find_layers(model):
    for module in model.modules():
        if hasattr(module, "layers") and isinstance(module.layers, torch.nn.ModuleList):
            return module.layers
    raise ValueError("no transformer layers in the model")


def local_shard(model: torch.nn.Module, name: str, param: torch.nn.Parameter, full: torch.Tensor) -> torch.Tensor:
    """This rank's piece of the 1-rank tensor ``full`` for local parameter ``name`` (TP / expert-TP slicing)."""
    from megatron.core import parallel_state

    if not getattr(param, "tensor_model_parallel", False):
        return full
    if getattr(param, "allreduce", True):
        size = parallel_state.get_tensor_model_parallel_world_size()
        rank = parallel_state.get_tensor_model_parallel_rank()
    else:  # expert parameter: expert tensor parallelism
        size, rank = (
            parallel_state.get_expert_tensor_parallel_world_size(),
            parallel_state.get_expert_tensor_parallel_rank(),
        )
    dim = param.partition_dim
    gated_fc1 = name.endswith("linear_fc1.weight") and model.config.gated_linear_unit
    halves = full.chunk(2, dim=dim) if gated_fc1 else (full,)  # fc1 = [gate; up], sharded per half
    return torch.cat([h.chunk(size, dim=dim)[rank] for h in halves], dim=dim)


def load_from_single_rank(model: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> None:
    """Copy the 1-rank model's parameters into this rank's (TP/EP/PP-partitioned) model."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(local_shard(model, name, param, full_state[full_name(model, name)]))


def expected_grads(model: torch.nn.Module, full_grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 1-rank gradients cut to this rank's parameters."""
    return {n: local_shard(model, n, p, full_grads[full_name(model, n)]) for n, p in model.named_parameters()}


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for n, p in model.named_parameters()
    }


def reduce_gradients_like_megatron(model: torch.nn.Module) -> None:
    """What DDP + ``finalize_model_grads`` do to gradients (megatron/core/distributed):

    * every gradient is summed over its data-parallel group (dense: data × context; experts: expert-data)
      and scaled by 1 / (data × context) (``DistributedDataParallel``'s gradient scaling factor);
    * parameters that see sequence-parallel tokens (``sequence_parallel=True``: norms, router) are summed over
      the tensor-parallel group (``_allreduce_non_tensor_model_parallel_grads``).
    """
    from megatron.core import parallel_state as ps

    dp_cp = ps.get_data_parallel_group(with_context_parallel=True)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        group = dp_cp if getattr(p, "allreduce", True) else ps.get_expert_data_parallel_group()
        if group.size() > 1:
            torch.distributed.all_reduce(p.grad, group=group)
        p.grad /= dp_cp.size()
        if getattr(p, "sequence_parallel", False) and ps.get_tensor_model_parallel_world_size() > 1:
            torch.distributed.all_reduce(p.grad, group=ps.get_tensor_model_parallel_group())


class RouterCapture:
    """Records each EMO router's routing map [s_local, b, E] and probs per call (layer number → list)."""

    def __init__(self, model: torch.nn.Module) -> None:
        from emo_plugin.moe.router import EmoRouter

        self.maps: dict[int, list[torch.Tensor]] = {}
        self.probs: dict[int, list[torch.Tensor]] = {}
        self.ids: dict[int, list[torch.Tensor]] = {}  # the routing ids [s_local, b] the router used
        for module in model.modules():
            if isinstance(module, EmoRouter):
                module.register_forward_hook(self._hook)

    def _hook(self, router, args, output):
        seq, batch = args[0].shape[:2]
        probs, routing_map = output
        self.maps.setdefault(router.layer_number, []).append(routing_map.detach().view(seq, batch, -1).clone())
        self.probs.setdefault(router.layer_number, []).append(probs.detach().view(seq, batch, -1).clone())
        self.ids.setdefault(router.layer_number, []).append(router.routing_ids_SB.clone())


def load_balancing_loss() -> torch.Tensor:
    """The EMO load-balancing loss per layer as Megatron's tracker reports it (summed over its groups)."""
    from megatron.core import parallel_state
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    entry = get_moe_metrics_tracker().metrics["load_balancing_loss"]
    values = entry.values.clone()
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(values, group=parallel_state.get_pipeline_model_parallel_group())
    if entry.reduce_group is not None and entry.reduce_group.size() > 1:
        torch.distributed.all_reduce(values, group=entry.reduce_group)
    return values


def clear_metrics() -> None:
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    get_moe_metrics_tracker().clear()


# ---------------------------------------------------------------------------------------------------------
# Shared test data and assertions (parent side)
# ---------------------------------------------------------------------------------------------------------
def documents_batch(batch: int, seq: int, *, seed: int = 0, padding: dict[int, int] | None = None):
    """Tokens [b, s] with EOD (id 0) separated documents, routing ids and a loss mask (padding tail = 0).

    ``padding`` maps a sequence index to its number of trailing padding tokens.
    """
    from emo_plugin.moe.routing_ids import build_routing_ids

    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (batch, seq), generator=gen)
    eod = torch.rand(batch, seq, generator=gen) < 0.15
    tokens[eod] = 0
    pad = torch.zeros(batch, seq, dtype=torch.bool)
    for row, n in (padding or {}).items():
        pad[row, seq - n :] = True
    ids = build_routing_ids(
        tokens_BS=tokens, eod_token_id=0, padding_BS=pad, max_documents_per_sequence=16, generator=gen
    )
    return tokens, ids, (~pad).float()


def assert_close_dicts(actual: dict, expected: dict, *, rtol=1e-5, atol=1e-6, what="") -> None:
    assert actual.keys() == expected.keys(), f"{what}: names differ"
    for name in actual:
        torch.testing.assert_close(
            actual[name], expected[name], rtol=rtol, atol=atol, msg=lambda m: f"{what} {name}: {m}"
        )


# ---------------------------------------------------------------------------------------------------------
# One training micro-step of a GPTModel (the worker most tests run)
# ---------------------------------------------------------------------------------------------------------
MODEL_SEED = 1234


def gpt_train_step(layout, tokens, ids, loss_mask, full_state=None, full_grads=None, lm_weight=1.0, config=None):
    """Forward + backward of one micro-batch on this rank's share of the batch.

    With ``full_state=None`` (the 1-rank reference) the model is initialised from ``MODEL_SEED`` and its
    parameters are returned; otherwise the 1-rank parameters are loaded into this rank's partition.
    The loss is the token mean over the *global* batch, written as this rank's share times the number of
    gradient-averaging ranks, so that Megatron's gradient averaging yields the 1-rank gradient.
    """
    from megatron.core import parallel_state as ps

    torch.manual_seed(MODEL_SEED)
    model = build_gpt(emo_config(layout, **(config or {})), seq_len=tokens.shape[1])
    if full_state is not None:
        load_from_single_rank(model, full_state)
    clear_metrics()
    capture = RouterCapture(model)

    dp_size, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    batch_index = torch.arange(tokens.shape[0]).chunk(dp_size)[dp_rank]
    seq_len = tokens.shape[1]
    seq_index = torch.arange(seq_len).chunk(layout.tp)[ps.get_tensor_model_parallel_rank()]  # SP chunk
    tokens, ids, mask = tokens[batch_index], ids[batch_index], loss_mask[batch_index]
    positions = torch.arange(seq_len).expand_as(tokens)
    per_token_loss = model(tokens, positions, None, labels=tokens, padding_mask=ids)
    loss = (per_token_loss * mask).sum() / loss_mask.sum() * dp_size
    (loss * lm_weight).backward()
    reduce_gradients_like_megatron(model)
    result = dict(
        per_token_loss=per_token_loss.detach(),
        batch_index=batch_index,
        seq_index=seq_index,
        maps=capture.maps,
        lb_loss=load_balancing_loss(),
        grads=gradients(model),
    )
    if full_state is None:
        result["state"] = parameters(model)
    if full_grads is not None:
        result["expected_grads"] = expected_grads(model, full_grads)
    return result


def assert_step_matches_reference(results: list, reference: dict, *, rtol=1e-5, atol=1e-6) -> None:
    """Per rank: losses, routing maps (this rank's tokens), LB loss and gradients equal the 1-rank step."""
    for rank, r in enumerate(results):
        torch.testing.assert_close(r["lb_loss"], reference["lb_loss"], rtol=rtol, atol=atol)
        for layer, maps in r["maps"].items():
            expected = reference["maps"][layer][0][r["seq_index"]][:, r["batch_index"]]
            assert torch.equal(maps[0], expected), f"rank {rank} layer {layer}: routing differs"
        if r["per_token_loss"] is not None:  # None on pipeline stages without the output layer
            torch.testing.assert_close(
                r["per_token_loss"], reference["per_token_loss"][r["batch_index"]], rtol=rtol, atol=atol
            )
        assert_close_dicts(r["grads"], r["expected_grads"], rtol=rtol, atol=atol, what=f"rank {rank} grad")
        assert r["maps"], f"rank {rank} saw no EMO router"


def build_emo_moe_layer(config, layer_number: int = 1):
    """A standalone ``EmoMoELayer`` (local spec: SequentialMLP experts, shared expert) on the global groups."""
    from megatron.core.transformer.moe.moe_utils import get_default_pg_collection

    from emo_plugin.model.spec import emo_decoder_block_spec

    block = emo_decoder_block_spec(config, use_transformer_engine=False, pp_rank=0)
    layer = block.layer_specs[0].submodules.mlp(config=config, pg_collection=get_default_pg_collection())
    layer.set_layer_number(layer_number)
    return layer


def moe_layer_inputs(seq: int, batch: int, hidden: int, *, seed: int = 0, eod_probability: float = 0.1):
    """Hidden states [s, b, h], routing ids [b, s] and a loss weight [s, b, h] for layer-level tests."""
    from emo_plugin.moe.routing_ids import build_routing_ids

    gen = torch.Generator().manual_seed(seed)
    hidden_SBH = torch.randn(seq, batch, hidden, generator=gen)
    tokens = (torch.rand(batch, seq, generator=gen) > eod_probability).long()  # 0 = end of document
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=0, max_documents_per_sequence=16, generator=gen)
    return hidden_SBH, ids, torch.randn(seq, batch, hidden, generator=gen)
