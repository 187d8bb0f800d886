"""Expert-parallel dispatch traffic of trained checkpoints, measured on gloo CPU ranks (docs/expert_parallel.md).

For every checkpoint and EP size: start EP gloo ranks (one data-parallel rank each, through the test suite's
CPU harness: on CPU, megatron-core's expert-parallel gathers need the test-only shims of tests/shims.py, which is
why this benchmark lives under tests/), load the checkpoint resharded to that layout, and run training-mode
forwards (drawn pools, rank limits on) over packed held-out documents. The router's own counters
(emo_plugin/moe/traffic.py) give the off-rank share and the bytes each rank's dispatch sends, with and without
deduplication per destination rank. Losses come from each run's folder: the last full-model validation loss in
its TensorBoard log and the held-out subset losses of ``emo-evaluate-subsets`` (``subsets/results.json``).

    python -m tests.benchmarks.expert_parallel_traffic --corpus runs/expert_parallel/heldout.jsonl \\
        --tokenizer examples/data/tokenizer.model --ep 2 4 \\
        --variant "EMO=runs/expert_parallel/emo" --variant "EMO + placement=runs/expert_parallel/emo_placed_ep{ep}"

A variant folder holds ``checkpoints/`` (a dist checkpoint), and optionally ``tensorboard/`` and
``subsets/results.json``; ``{ep}`` in it stands for the EP size (a placement is made per EP size); a
``losses_from`` folder can be named after ``|`` when a variant computes the same function as another.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from tests.parallel.harness import Layout, run_ranks


def packed_sequences(corpus: Path, tokenizer: str, seq_length: int, num_sequences: int, seed: int):
    """Held-out documents (shuffled by ``seed``), each ending with EOD, cut into [num_sequences, seq_length]."""
    from emo_plugin.data.tokenizer import EmoTokenizer

    tok = EmoTokenizer(tokenizer)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines() if line.strip()]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    stream: list[int] = []
    for i in order:
        stream += tok.encode(texts[i]) + [tok.eod]
        if len(stream) >= seq_length * num_sequences:
            break
    needed = seq_length * num_sequences
    if len(stream) < needed:
        raise SystemExit(f"{corpus}: {len(stream)} tokens, fewer than the {needed} the measurement needs")
    return torch.tensor(stream[:needed]).view(num_sequences, seq_length), tok.eod


def measure_rank(layout, checkpoint: str, tokens_NS, eod: int, global_batch: int, seed: int) -> dict:
    """Rank worker: forwards of this rank's share of each global batch; the router's traffic counters per step."""
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    from emo_plugin import checkpoint as ckpt
    from emo_plugin.convert.checkpoint_config import record_of
    from emo_plugin.convert.dist_reader import DistCheckpointReader, resolve_iteration_dir
    from emo_plugin.model.build import build_emo_gpt_model
    from emo_plugin.model.megatron_config import transformer_config
    from emo_plugin.moe.routing_ids import build_routing_ids
    from emo_plugin.moe.traffic import EP_METRIC_NAMES

    folder = resolve_iteration_dir(checkpoint)
    record, _ = record_of(DistCheckpointReader(folder))
    config = transformer_config(record, router=dict(seed=seed), use_cpu_initialization=True,
                                moe_token_dispatcher_type="allgather", expert_model_parallel_size=layout.ep)
    model = build_emo_gpt_model(config, vocab_size=record.vocab_size, max_sequence_length=record.seq_length,
                                use_transformer_engine=False, host_execution=True, rotary_base=record.rotary_base)
    iteration = int(folder.name.removeprefix("iter_"))
    model.load_state_dict(ckpt.load(folder.parent, iteration, {"model": model.sharded_state_dict(prefix="")})["model"])
    model.train()
    dp_size, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    tracker = get_moe_metrics_tracker()
    steps = []
    for step, batch in enumerate(tokens_NS.split(global_batch)):
        tracker.clear()
        local = batch.chunk(dp_size)[dp_rank]
        ids = build_routing_ids(tokens_BS=local, eod_token_id=eod,
                                max_documents_per_sequence=record.max_documents_per_sequence,
                                generator=torch.Generator().manual_seed(seed * 1000 + step * 64 + dp_rank))
        model(local, torch.arange(local.shape[1]).expand_as(local), None, padding_mask=ids)
        steps.append({name: tracker.metrics[name].values.clone() for name in EP_METRIC_NAMES})
    return {"steps": steps}


def last_validation_loss(tensorboard: Path) -> float | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tensorboard.is_dir():
        return None
    events = EventAccumulator(str(tensorboard))
    events.Reload()
    if "lm loss validation" not in events.Tags()["scalars"]:
        return None
    return events.Scalars("lm loss validation")[-1].value


def losses(folder: Path) -> dict:
    out = {"validation_loss": last_validation_loss(folder / "tensorboard")}
    results = folder / "subsets" / "results.json"
    if results.is_file():
        mean = json.loads(results.read_text())["mean"]
        out |= {"heldout_full": mean["full_loss"], "heldout_25": mean["subsets"]["25%"]["loss"],
                "rise_25": mean["subsets"]["25%"]["loss_rise"]}
    return out


def summarise(results: list[dict]) -> dict:
    """Mean over ranks and steps per layer; bytes summed over layers (one forward dispatch per step and rank)."""
    per_step = [step for r in results for step in r["steps"]]
    mean = {name: torch.stack([s[name] for s in per_step]).mean(0) for name in per_step[0]}
    return {"offrank_share": mean["ep_offrank_share"].mean().item(),
            "bytes": mean["ep_dispatch_bytes"].sum().item(),
            "bytes_dedup": mean["ep_dispatch_bytes_dedup"].sum().item()}


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True,
                   help="NAME=RUN_FOLDER[|LOSSES_FOLDER] (split at the last '='); {ep} in a folder is the EP size")
    p.add_argument("--ep", type=int, nargs="+", default=[2, 4], help="EP sizes, one gloo rank each (default 2 4)")
    p.add_argument("--corpus", type=Path, required=True, help="jsonl of held-out documents ('text' field)")
    p.add_argument("--tokenizer", required=True, help="sentencepiece model the checkpoints were trained with")
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--global-batch", type=int, default=8, help="sequences per step, split over the ranks")
    p.add_argument("--steps", type=int, default=8, help="steps measured (default %(default)s)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", type=Path, help="also write every number here")
    args = p.parse_args(argv)
    tokens, eod = packed_sequences(args.corpus, args.tokenizer, args.seq_length, args.global_batch * args.steps,
                                   args.seed)
    from tests.benchmarks.expert_parallel_traffic import measure_rank as worker  # importable by the ranks

    rows = []
    for spec in args.variant:
        name, _, folders = spec.rpartition("=")  # names may hold "=" (M=1), folders do not
        run, _, losses_from = folders.partition("|")
        for ep in args.ep:
            folder = Path(run.format(ep=ep))
            results = run_ranks(worker, ep, Layout(ep=ep), timeout=1800, checkpoint=str(folder / "checkpoints"),
                                tokens_NS=tokens, eod=eod, global_batch=args.global_batch, seed=args.seed)
            rows.append({"variant": name, "ep": ep, **summarise(results),
                         **losses(Path((losses_from or run).format(ep=ep)))})
            print(f"measured {name} at EP{ep}", flush=True)
    baseline = {row["ep"]: row for row in rows if row["variant"] == "EMO"}
    lines = ["| EP | variant | off-rank share | dispatch MB/step/rank | dedup MB/step/rank | dedup vs EMO | "
             "val loss | held-out loss | 25%-subset loss (rise) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["ep"]):
        base = baseline.get(row["ep"])
        change = f"{100 * (row['bytes_dedup'] / base['bytes_dedup'] - 1):+.1f}%" if base else "–"
        rise = f"{fmt(row.get('heldout_25'))} ({fmt(row.get('rise_25'))})" if "heldout_25" in row else "–"
        lines.append(f"| {row['ep']} | {row['variant']} | {row['offrank_share']:.3f} | {row['bytes'] / 1e6:.2f} | "
                     f"{row['bytes_dedup'] / 1e6:.2f} | {change} | {fmt(row.get('validation_loss'))} | "
                     f"{fmt(row.get('heldout_full'))} | {rise} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
