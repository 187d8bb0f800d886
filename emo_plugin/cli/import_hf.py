"""Import an EMO Hugging Face folder (AI2 layout) as a Megatron dist checkpoint for any TP/EP/PP.

With 127 routed experts and EP 8 the router gets 1 inert expert (zero weights, never selected); train with
--emo.num_inert_experts=1 (the summary prints the value).

example:
  hf download allenai/Emo_1b14b_1T --local-dir /models/Emo_1b14b_1T
  emo-import-hf --hf /models/Emo_1b14b_1T --output ckpt/emo-import --target-expert-parallel-size 8
"""

from __future__ import annotations

import argparse
import json

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.convert import import_from_hf
from emo_plugin.convert.output_dir import refuse_overlap


def build_parser() -> argparse.ArgumentParser:
    p = documented_parser(__doc__, "emo-import-hf")
    p.add_argument("--hf", required=True, help="local HF folder (config.json + safetensors)")
    p.add_argument("--output", required=True, help="checkpoint root to write (iter_0000000 + latest file)")
    p.add_argument("--target-expert-parallel-size", type=int, default=1,
                   help="pad routed experts to a multiple of this (default: %(default)s)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="fp32",
                   help="dtype of the written weights (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return p


def import_checkpoint(args: argparse.Namespace) -> None:
    refuse_overlap(args.output, [args.hf])  # before the model is built
    summary = import_from_hf(
        args.hf, args.output, target_expert_parallel_size=args.target_expert_parallel_size,
        dtype=args.dtype, force=args.force,
    )
    print(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), import_checkpoint, argv)
