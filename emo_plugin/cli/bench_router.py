"""Benchmark: EMO router and EMO MoE layer against Megatron's stock TopKRouter / MoELayer on identical inputs.

Both sides get the same hidden states, the same expert shapes, the same dispatcher and the same shared expert;
the stock router runs Megatron's pre-softmax top-k with its micro-batch aux loss and z-loss (the matched
"standard MoE"), the EMO router adds document pools and the DP-global load-balancing loss. Prints step times
(forward + backward) and the EMO/stock ratios. On a GPU it uses the TE spec (grouped GEMM) by default.

Example (H100, the shape in docs/benchmarks.md):
    emo-bench-router --hidden 2048 --experts 128 --topk 8 --ffn 1024 --seq 4096 --batch 2
CPU smoke run:
    emo-bench-router --hidden 64 --experts 8 --topk 2 --ffn 32 --seq 64 --batch 2 --iters 3
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import time

import torch

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.temporary_files import atomic_write


def build_parser() -> argparse.ArgumentParser:
    p = documented_parser(__doc__, "emo-bench-router")
    p.add_argument("--hidden", type=int, default=2048, help="model width")
    p.add_argument("--experts", type=int, default=128, help="routed experts")
    p.add_argument("--topk", type=int, default=8, help="routed experts per token")
    p.add_argument("--shared", type=int, default=0, help="shared experts (Megatron shared-expert module)")
    p.add_argument("--ffn", type=int, default=1024, help="expert FFN width")
    p.add_argument("--seq", type=int, default=4096, help="sequence length")
    p.add_argument("--batch", type=int, default=2, help="sequences per micro-batch (tokens = seq × batch)")
    p.add_argument("--mean-doc-len", type=int, default=512, help="mean document length for the EMO pools")
    p.add_argument("--pool-min", type=int, default=8)
    p.add_argument("--pool-max", type=int, default=128)
    p.add_argument("--dispatcher", choices=["alltoall", "allgather"], default=None, help="default: alltoall on GPU")
    p.add_argument("--no-te", action="store_true", help="use Megatron's local spec instead of the TE spec on GPU")
    p.add_argument("--bf16", action="store_true", help="bf16 params and activations (GPU)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    return p


def init_single_rank(device: str) -> None:
    from megatron.core import parallel_state

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    if device == "cuda":
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(0)


def build_layers(args, device: str):
    """(stock MoE layer, EMO MoE layer) with identical weights."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.moe.moe_utils import get_default_pg_collection
    from megatron.core.transformer.moe.router import TopKRouter
    from megatron.core.transformer.transformer_config import TransformerConfig

    from emo_plugin.model.megatron_config import transformer_config
    from emo_plugin.model.sizes import SIZES
    from emo_plugin.model.spec import with_emo_moe_layer
    from emo_plugin.moe.router import EmoRouter

    use_te = device == "cuda" and not args.no_te
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    # One layer of emo_1b14b with the command line's shape; stock and EMO then share every Megatron field.
    record = dataclasses.replace(
        SIZES["emo_1b14b"], num_layers=1, hidden_size=args.hidden, num_moe_experts=args.experts,
        moe_router_topk=args.topk, moe_ffn_hidden_size=args.ffn, num_shared_experts=args.shared, seq_length=args.seq,
        pool_min=args.pool_min, pool_max=args.pool_max, lb_coeff=0.01,
        max_documents_per_sequence=max(64, 4 * args.seq // args.mean_doc_len),
    )
    emo_cfg = transformer_config(
        record, params_dtype=dtype, bf16=args.bf16,
        moe_token_dispatcher_type=args.dispatcher or ("alltoall" if device == "cuda" else "allgather"),
        moe_grouped_gemm=use_te, use_cpu_initialization=device == "cpu",
    )
    stock_fields = {f.name: getattr(emo_cfg, f.name) for f in dataclasses.fields(TransformerConfig) if f.init}
    stock_cfg = TransformerConfig(
        **{**stock_fields, "moe_router_load_balancing_type": "aux_loss", "moe_aux_loss_coeff": 0.01}
    )
    spec = get_moe_module_spec(use_te=use_te, num_experts=args.experts, moe_grouped_gemm=use_te)
    if device == "cpu":  # Megatron's TopKRouter.gating moves weights to CUDA; give it the host gating EMO uses
        host_router = type("HostTopKRouter", (TopKRouter,), {"gating": EmoRouter.gating})
        submodules = dataclasses.replace(spec.keywords["submodules"], router=host_router)
        spec = functools.partial(spec.func, *spec.args, **{**spec.keywords, "submodules": submodules})
    pg = get_default_pg_collection()
    stock = spec(config=stock_cfg, pg_collection=pg)
    emo = with_emo_moe_layer(spec)(config=emo_cfg, pg_collection=pg)
    emo.load_state_dict(stock.state_dict(), strict=False)
    for layer in (stock, emo):
        layer.set_layer_number(1)
        layer.to(device)
    return stock, emo


def random_routing_ids(args, device):
    from emo_plugin.moe.routing_ids import build_routing_ids

    g = torch.Generator().manual_seed(0)
    cuts = torch.rand(args.batch, args.seq, generator=g) < 1.0 / args.mean_doc_len
    doc_ids = torch.cumsum(cuts.long(), dim=1) + 1
    return build_routing_ids(
        doc_ids_BS=doc_ids, max_documents_per_sequence=max(64, 4 * args.seq // args.mean_doc_len), generator=g
    ).to(device)


def time_steps(fn, args, device) -> float:
    """Median milliseconds of fn() (forward + backward) over args.iters runs after warm-up."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench(args: argparse.Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    init_single_rank(device)
    torch.manual_seed(0)
    stock, emo = build_layers(args, device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    x = torch.randn(args.seq, args.batch, args.hidden, device=device, dtype=dtype, requires_grad=True)
    ids = random_routing_ids(args, device)
    grad = torch.randn_like(x)

    def emo_router_step():
        emo.router.routing_ids_SB = ids.T
        probs, _ = emo.router(x)
        emo.router.routing_ids_SB = None
        probs.sum().backward()

    def stock_router_step():
        probs, _ = stock.router(x)
        probs.sum().backward()

    def layer_step(layer, **kw):
        out, _ = layer(x, **kw)
        out.backward(grad)

    results = {
        "stock_router_ms": time_steps(stock_router_step, args, device),
        "emo_router_ms": time_steps(emo_router_step, args, device),
        "stock_layer_ms": time_steps(lambda: layer_step(stock), args, device),
        "emo_layer_ms": time_steps(lambda: layer_step(emo, padding_mask=ids), args, device),
    }
    results["router_ratio"] = results["emo_router_ms"] / results["stock_router_ms"]
    results["layer_ratio"] = results["emo_layer_ms"] / results["stock_layer_ms"]
    results["tokens"] = args.seq * args.batch
    results["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device {results['device']} | tokens {results['tokens']} | hidden {args.hidden} | experts {args.experts} "
          f"| top-{args.topk} | ffn {args.ffn} | shared {args.shared}")
    print(f"router fwd+bwd: stock {results['stock_router_ms']:.3f} ms, EMO {results['emo_router_ms']:.3f} ms, "
          f"ratio {results['router_ratio']:.3f}")
    print(f"MoE layer fwd+bwd: stock {results['stock_layer_ms']:.3f} ms, EMO {results['emo_layer_ms']:.3f} ms, "
          f"ratio {results['layer_ratio']:.3f}")
    if args.json:
        atomic_write(args.json, json.dumps({**vars(args), **results}, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), bench, argv)
