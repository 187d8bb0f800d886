"""Select a task's experts from example documents or few-shot task prompts and write a pruned EMO HF checkpoint.

examples:
  emo-select-experts --model hf/emo-tiny --documents task.jsonl --keep 0.25 --method greedy \\
      --selection-json sel.json --output hf/emo-tiny-task25
  emo-select-experts --model hf/emo-tiny --task-prompts gsm8k.jsonl --num-shots 8 --num-examples 1 \\
      --keep-per-layer 100%x2,16x14 --selection-json sel.json

--keep: of ALL expert slots per layer, shared included (AI2: "32 of 128"): a number <= 1 or a percentage is a
fraction (0.25, 25%; 1 = 100% = every slot), a number > 1 a whole count (32); 1.5 or a count above the slots is
refused. --keep-per-layer: one such value per layer, comma-separated, "VALUExN" repeating it for N layers
(16,16,8,8 or 100%x2,8x14 = every slot in the first 2 layers, then 8).
--task-prompts: JSON lines of solved examples (fields named by --template); the first --num-shots records are the
demonstrations, each of the next --num-examples records one k-shot calibration prompt.
Without --output only the selection JSON is written (for analysis tools).
"""

import argparse
import json
from pathlib import Path

from emo_plugin.cli import task_prompt_options
from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.evaluation.selection import METHODS
from emo_plugin.evaluation.selection.keep import keep_argument
from emo_plugin.evaluation.selection.layer_budget import layer_budget_argument


def build_parser() -> argparse.ArgumentParser:
    p = documented_parser(__doc__, "emo-select-experts")
    p.add_argument("--model", required=True, help="EMO HF folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--documents", help="jsonl of calibration documents")
    source.add_argument("--task-prompts", help="jsonl of task examples, formatted into k-shot calibration prompts")
    p.add_argument("--text-field", default="text", help="JSON field of the document text (default: %(default)s)")
    p.add_argument("--max-documents", type=int, default=64,
                   help="calibration documents read from --documents (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=1024,
                   help="tokens per document or prompt, eos included (default: %(default)s)")
    p.add_argument("--method", choices=tuple(METHODS), default="greedy",
                   help="how experts are chosen (default: %(default)s)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--keep", type=keep_argument,
                        help="fraction (0.125, 25%%; <= 1) or whole count (> 1) of expert slots per layer")
    budget.add_argument("--keep-per-layer", type=layer_budget_argument,
                        help="one --keep value per layer: 16,16,8,8 or 100%%x2,8x14")
    p.add_argument("--seed", type=int, default=0, help="seed of --method random")
    p.add_argument("--selection-json", required=True, help="where to write {layer: kept routed expert ids}")
    p.add_argument("--output", help="pruned HF folder to write")
    p.add_argument("--max-shard-size", default="5GB", help="safetensors shard cap of --output (default: %(default)s)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="dtype the model runs in while scoring")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output folder")
    task_prompt_options.add_prompt_format(p)
    return p


def calibration_sequences(args, tokenizer, eos: int) -> list:
    """[1, n] token-id tensors of the calibration documents or task prompts."""
    import torch

    from emo_plugin.evaluation.selection.calibration import read_documents, tokenize_documents
    from emo_plugin.evaluation.selection.task_prompts import (
        format_prompts,
        read_task_records,
        template_fields,
        tokenize_prompts,
    )

    if args.documents:
        texts = read_documents(args.documents, args.text_field, args.max_documents)
        return tokenize_documents(tokenizer, texts, eos, args.max_tokens)
    records = read_task_records(args.task_prompts, template_fields(args.template, args.answer_field))
    prompts = format_prompts(records, args.template, args.answer_field, args.num_shots, args.num_examples)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return [torch.tensor([tokens.ids]) for tokens in tokenize_prompts(encode, prompts, eos, args.max_tokens)]


def select(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from emo_plugin.convert.output_dir import check_output_dir, refuse_overlap
    from emo_plugin.evaluation.analysis.checkpoint import eos_token_id, load_emo_model
    from emo_plugin.evaluation.selection import select_experts, write_pruned_checkpoint

    inputs = [args.model, args.documents or args.task_prompts]
    refuse_overlap(args.selection_json, inputs, flag="--selection-json")
    if args.output:
        check_output_dir(args.output, args.force, inputs=inputs)
    model = load_emo_model(args.model, dtype=args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)  # tokenizer needs no model code
    docs = calibration_sequences(args, tokenizer, eos_token_id(model))
    keep = args.keep if args.keep is not None else args.keep_per_layer
    selection = select_experts(model, docs, method=args.method, keep=keep, seed=args.seed)
    record = {
        "model": str(args.model), "documents": str(args.documents or args.task_prompts), "num_documents": len(docs),
        "method": args.method, "keep": keep, "seed": args.seed,
        "layers": {str(k): v for k, v in selection.items()},
    }
    if args.task_prompts:
        record |= {"template": args.template, "num_shots": args.num_shots}
    Path(args.selection_json).write_text(json.dumps(record, indent=2) + "\n")
    summary = {"selection": args.selection_json}
    if args.output:
        summary.update(write_pruned_checkpoint(args.model, args.output, selection,
                                               max_shard_size=args.max_shard_size, force=args.force))
        summary["output"] = args.output
    print(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), select, argv)
