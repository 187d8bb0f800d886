"""Write a pruned EMO Hugging Face checkpoint from a saved expert selection.

The selection is a JSON object mapping layer → kept routed-expert ids, as written by
``emo-select-experts --selection-json`` (under its "layers" key), by ``emo-evaluate-subsets``
(``selections/<domain>/<fraction>.json``) or inside a pruned folder (``expert_selection.json``). The output
physically holds only the kept experts and their router rows (shared experts are always kept) and loads with
emo_plugin's modelling code; the summary reports bytes and parameters before and after.

example:
    emo-prune-experts --model hf/emo-tiny --selection runs/eval/selections/python/25%.json \\
        --output hf/emo-tiny-python25
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-prune-experts")
    parser.add_argument("--model", type=Path, required=True, help="EMO Hugging Face folder to prune")
    parser.add_argument("--selection", type=Path, required=True, help="JSON {layer: kept routed expert ids}")
    parser.add_argument("--output", type=Path, required=True, help="pruned folder to write")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap, e.g. 5GB, 500MB")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return parser


def prune(args: argparse.Namespace) -> None:
    from emo_plugin.convert.output_dir import check_output_dir
    from emo_plugin.evaluation.selection import write_pruned_checkpoint
    from emo_plugin.evaluation.selection.prune import read_selection

    check_output_dir(args.output, args.force, inputs=[args.model, args.selection])  # before any work
    selection = read_selection(args.selection)
    summary = write_pruned_checkpoint(
        args.model, args.output, selection, max_shard_size=args.max_shard_size, force=args.force
    )
    print(json.dumps({"output": str(args.output), **summary}, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), prune, argv)
