"""Place experts on expert-parallel ranks by how documents use them, and rewrite the checkpoint accordingly.

Reads per-document expert usage (``document_usage.npz`` from ``emo-analyze-modularity`` on a representative
corpus), computes per layer a balanced assignment of the routed experts to --ranks EP ranks that maximises the
routed slots each document keeps on one rank, and writes --checkpoint with its experts (and router rows) permuted
so that rank p's block of experts is the set placed on p. The rewritten model computes the same function. Under
expert parallelism its documents then reach fewer ranks, so a dispatcher that sends a token once per destination
rank sends fewer bytes; Megatron's all-to-all sends one copy per chosen expert whatever the placement
(docs/expert_parallel.md has the measurements).

--checkpoint is an EMO Hugging Face folder (rewritten as one) or a Megatron dist checkpoint of any TP/EP/PP layout
(rewritten as a weights-only checkpoint: train on from it with checkpoint.load; the optimizer starts afresh).
Prints, per layer, the kept share before (the checkpoint's order), after, and of a random placement.

example:
    emo-analyze-modularity --checkpoint hf/emo --corpus heldout.jsonl --out analysis/emo
    emo-place-experts --usage analysis/emo/document_usage.npz --ranks 4 \\
        --checkpoint runs/emo/checkpoints --output runs/emo_placed/checkpoints
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import ConversionError


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-place-experts")
    parser.add_argument("--usage", type=Path, required=True,
                        help="document_usage.npz written by emo-analyze-modularity (per-document usage per layer)")
    parser.add_argument("--ranks", type=int, required=True, help="expert-parallel size to place the experts for")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="EMO Hugging Face folder or Megatron dist checkpoint (root or iter_XXXXXXX) to rewrite")
    parser.add_argument("--output", type=Path, required=True, help="where to write the permuted checkpoint")
    parser.add_argument("--restarts", type=int, default=8,
                        help="random starts of the placement search per layer, besides the current order "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random starts (default: %(default)s)")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap for an HF output")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return parser


def read_slot_counts(path: Path) -> list[np.ndarray]:
    """Per layer [documents, routed experts]: each document's routed slots per expert (usage × its tokens)."""
    try:
        data = np.load(path)
        layers = sorted(int(k.removeprefix("usage_layer")) for k in data.files if k.startswith("usage_layer"))
        tokens = data["num_tokens"].astype(np.float64)[:, None]
        counts = [data[f"usage_layer{layer}"].astype(np.float64) * tokens for layer in layers]
    except (OSError, ValueError, KeyError) as error:
        raise ConversionError(f"{path}: not a document_usage.npz of emo-analyze-modularity ({error})") from None
    if not counts or layers != list(range(len(layers))):
        raise ConversionError(f"{path}: expected arrays usage_layer0 … usage_layerN and num_tokens")
    return counts


def check_rank_rows(checkpoint: Path, ranks: int, routed: int) -> None:
    """The placement assumes Megatron's layout at --ranks: the routed experts padded with the fewest trailing inert
    slots to a multiple of --ranks, so each rank's block of rows is known."""
    from emo_plugin.convert.checkpoint_config import record_of
    from emo_plugin.convert.dist_reader import DistCheckpointReader

    record, _ = record_of(DistCheckpointReader(checkpoint))
    if record.num_selectable_experts != routed:
        raise ConversionError(f"the usage has {routed} routed experts per layer, {checkpoint} has "
                              f"{record.num_selectable_experts}: record the usage with this checkpoint's export")
    expected = record.with_inert_padding(ranks).num_moe_experts
    if record.num_moe_experts != expected:
        raise ConversionError(
            f"{checkpoint}: {record.num_moe_experts} router rows ({record.num_inert_experts} inert); at "
            f"--ranks={ranks} Megatron's blocks need {expected} (the routed experts padded to a multiple of {ranks}); "
            f"re-import it with emo-import-hf --target-expert-parallel-size {ranks}, or place for a size whose "
            "padding it has")


def place(args: argparse.Namespace) -> None:
    from emo_plugin.convert.output_dir import check_output_dir
    from emo_plugin.convert.permute_experts import permute_dist_checkpoint, permute_hf_folder
    from emo_plugin.evaluation.placement import place_experts

    check_output_dir(args.output, args.force, inputs=[args.checkpoint, args.usage])  # before any work
    if args.ranks < 2:
        raise ConversionError(f"--ranks={args.ranks}: placement needs an expert-parallel size of at least 2")
    slot_counts = read_slot_counts(args.usage)
    is_hf_folder = (args.checkpoint / "config.json").is_file()
    if not is_hf_folder:
        check_rank_rows(args.checkpoint, args.ranks, slot_counts[0].shape[1])
    layers = place_experts(slot_counts, args.ranks, restarts=args.restarts, seed=args.seed)
    orders = {layer: p.order for layer, p in enumerate(layers)}
    record = {
        "ranks": args.ranks, "usage": str(args.usage),
        "layers": [{"layer": i, "kept_before": round(p.kept_before, 4), "kept_after": round(p.kept_after, 4),
                    "kept_random": round(p.kept_random, 4)} for i, p in enumerate(layers)],
        "orders": {str(k): v for k, v in orders.items()},
    }
    if is_hf_folder:
        permute_hf_folder(args.checkpoint, args.output, orders, max_shard_size=args.max_shard_size,
                          force=args.force, placement=record)
    else:
        permute_dist_checkpoint(args.checkpoint, args.output, orders, force=args.force, placement=record)
    summary = {key: record[key] for key in ("ranks", "layers")} | {"output": str(args.output)}
    print(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), place, argv)
