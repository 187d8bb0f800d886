"""Put a fine-tuned expert subset back into the full EMO Hugging Face model, at the experts' original slots.

The subset is a pruned folder (emo-prune-experts, or emo-evaluate-subsets --save-finetuned after fine-tuning)
or a full-size model fine-tuned with only the kept experts trainable. Its kept experts, their router rows, the
shared experts and every weight outside the experts (attention, norms, embeddings, output) replace the full
model's; the experts the subset dropped keep the full model's weights. The kept routed-expert ids per layer
are read from the subset's expert_selection.json (written by the pruning) unless --selection names a file.
The two checkpoints must share the record, the tokenizer and every tensor's shape and dtype; a difference is
refused naming the field, file or tensor. The output is a full checkpoint with the full model's config.

example:
    emo-evaluate-subsets --checkpoint hf/emo-1b14b --corpus corpus.jsonl --out runs/eval/python \\
        --domains python --fractions 0.25 --finetune-steps 100 --save-finetuned hf/emo-python25-tuned
    emo-reinsert-experts --full hf/emo-1b14b --subset hf/emo-python25-tuned --output hf/emo-1b14b-python
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import ConversionError

SELECTION_NAME = "expert_selection.json"


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-reinsert-experts")
    parser.add_argument("--full", type=Path, required=True, help="the full EMO Hugging Face folder it came from")
    parser.add_argument("--subset", type=Path, required=True, help="the fine-tuned subset (pruned or masked full-size)")
    parser.add_argument(
        "--selection", type=Path, help=f"JSON {{layer: kept routed expert ids}} (default: --subset's {SELECTION_NAME})"
    )
    parser.add_argument("--output", type=Path, required=True, help="full folder to write")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap, e.g. 5GB, 500MB")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    return parser


def reinsert(args: argparse.Namespace) -> None:
    from emo_plugin.convert.output_dir import check_output_dir
    from emo_plugin.evaluation.selection import write_reinserted_checkpoint
    from emo_plugin.evaluation.selection.prune import read_selection

    check_output_dir(args.output, args.force, inputs=[args.full, args.subset, args.selection])  # before any work
    selection_file = args.selection or args.subset / SELECTION_NAME
    if not selection_file.is_file():
        raise ConversionError(
            f"{selection_file} does not exist: pass --selection with the subset's kept expert ids per layer "
            f"(emo-prune-experts writes {SELECTION_NAME} into a pruned folder)"
        )
    summary = write_reinserted_checkpoint(
        args.full,
        args.subset,
        args.output,
        read_selection(selection_file),
        max_shard_size=args.max_shard_size,
        force=args.force,
    )
    print(json.dumps({"output": str(args.output), **summary}))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), reinsert, argv)
