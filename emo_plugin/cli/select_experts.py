"""Select a task's experts from example documents and write a pruned EMO HF checkpoint.

example:
  emo-select-experts --model hf/emo-tiny --documents task.jsonl --keep 0.25 --method greedy \\
      --selection-json sel.json --output hf/emo-tiny-task25

--keep: of ALL expert slots per layer, shared included (AI2: "32 of 128"): a number <= 1 or a percentage is a
fraction (0.25, 25%; 1 = 100% = every slot), a number > 1 a whole count (32); 1.5 or a count above the slots is
refused.
Without --output only the selection JSON is written (for analysis tools).
"""

import argparse
import json
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.evaluation.selection import METHODS
from emo_plugin.evaluation.selection.keep import keep_argument


def build_parser() -> argparse.ArgumentParser:
    p = documented_parser(__doc__, "emo-select-experts")
    p.add_argument("--model", required=True, help="EMO HF folder")
    p.add_argument("--documents", required=True, help="jsonl of calibration documents")
    p.add_argument("--text-field", default="text", help="JSON field of the document text (default: %(default)s)")
    p.add_argument("--max-documents", type=int, default=64,
                   help="calibration documents read from --documents (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="tokens per document, eos included (default: %(default)s)")
    p.add_argument("--method", choices=tuple(METHODS), default="greedy",
                   help="how experts are chosen (default: %(default)s)")
    p.add_argument("--keep", type=keep_argument, required=True,
                   help="fraction (0.125, 25%%; <= 1) or whole count (> 1) of expert slots per layer")
    p.add_argument("--seed", type=int, default=0, help="seed of --method random")
    p.add_argument("--selection-json", required=True, help="where to write {layer: kept routed expert ids}")
    p.add_argument("--output", help="pruned HF folder to write")
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap of --output (default: %(default)s)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="dtype the model runs in while scoring")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output folder")
    return p


def select(args: argparse.Namespace) -> None:

    from transformers import AutoTokenizer

    from emo_plugin.convert.output_dir import check_output_dir, refuse_overlap
    from emo_plugin.evaluation.analysis.checkpoint import eos_token_id, load_emo_model
    from emo_plugin.evaluation.selection import select_experts, write_pruned_checkpoint
    from emo_plugin.evaluation.selection.calibration import read_documents, tokenize_documents

    inputs = [args.model, args.documents]
    refuse_overlap(args.selection_json, inputs, flag="--selection-json")
    if args.output:
        check_output_dir(args.output, args.force, inputs=inputs)
    model = load_emo_model(args.model, dtype=args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)  # tokenizer needs no model code
    texts = read_documents(args.documents, args.text_field, args.max_documents)
    docs = tokenize_documents(tokenizer, texts, eos_token_id(model), args.max_tokens)
    selection = select_experts(model, docs, method=args.method, keep=args.keep, seed=args.seed)
    record = {
        "model": str(args.model), "documents": str(args.documents), "num_documents": len(docs),
        "method": args.method, "keep": args.keep, "seed": args.seed,
        "layers": {str(k): v for k, v in selection.items()},
    }
    Path(args.selection_json).write_text(json.dumps(record, indent=2) + "\n")
    summary = {"selection": args.selection_json}
    if args.output:
        summary.update(write_pruned_checkpoint(args.model, args.output, selection,
                                               max_shard_size=args.max_shard_size, force=args.force))
        summary["output"] = args.output
    print(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), select, argv)
