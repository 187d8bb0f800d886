"""Export a Megatron dist checkpoint (any TP/EP/PP layout) to an EMO Hugging Face folder.

example:
  emo-export-hf --checkpoint runs/tiny_cpu/checkpoints --output hf/emo-tiny \\
      --tokenizer examples/data/tokenizer.model --dtype bf16 --max-shard-size 5GB
"""

from __future__ import annotations

import argparse
import json

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.convert import export_to_hf
from emo_plugin.convert.output_dir import refuse_overlap


def build_parser() -> argparse.ArgumentParser:
    p = documented_parser(__doc__, "emo-export-hf")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint root (with latest_checkpointed_iteration.txt) or an iter_XXXXXXX folder")
    p.add_argument("--output", required=True, help="HF folder to write (must be empty or absent unless --force)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="dtype of the written weights "
                   "(default: %(default)s)")
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap, e.g. 5GB, 500MB "
                   "(default: %(default)s)")
    p.add_argument("--tokenizer", help="SentencePiece model (default: the one the training config names)")
    p.add_argument("--model-config", help="json/yaml model record or training config, if the checkpoint has none")
    p.add_argument("--key-prefix", help="prefix of the model's sharded keys (default: detected)")
    p.add_argument("--inference-pool-size", default="off", metavar="{off,training,N}",
                   help="EMO document pools of the HF model (emo_inference_pool_size): off = plain top-k over all "
                   "experts (default), training = the run's emo.pool_eval, or N routed experts per document")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return p


def export(args: argparse.Namespace) -> None:
    refuse_overlap(args.output, [args.checkpoint, args.tokenizer, args.model_config])  # before any work
    summary = export_to_hf(
        args.checkpoint, args.output, dtype=args.dtype, max_shard_size=args.max_shard_size,
        tokenizer=args.tokenizer, model_config=args.model_config, key_prefix=args.key_prefix, force=args.force,
        inference_pool=args.inference_pool_size,
    )
    print(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), export, argv)
