"""Calibration from a task's few-shot prompts, as the paper selects experts: k solved examples, then the query.

A task file is JSON lines, one example per record (e.g. ``{"question": ..., "answer": ...}``); a template names
the fields (``"Question: {question}\\nAnswer: {answer}"``). The answer field's placeholder splits the template:
what comes before it is the prompt, the answer and the rest of the template are the answer text. The first
``shots`` records are the solved demonstrations shared by every prompt (lm-eval's fixed few-shot set); each of
the next ``num_examples`` records (all when None) is one query. Examples are separated by a blank line.

A prompt is tokenised as prompt ids + answer ids + eos, so ``answer_start`` marks exactly where the answer
begins: the answer-only fine-tune loss (``subset_finetune.py``) trains on the tokens from there on. Selection
scores the whole sequence (the prompt with its answer, as the model reads it when the answer is scored).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emo_plugin.data.records import json_records
from emo_plugin.errors import DataError

DEFAULT_TEMPLATE = "Question: {question}\nAnswer: {answer}"
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class TaskPrompt:
    prompt: str  # the solved examples and the query, up to where its answer goes
    answer: str  # the query's answer and the template text after it


@dataclass(frozen=True)
class PromptTokens:
    ids: list[int]  # prompt + answer + eos
    answer_start: int  # index of the first answer token


def template_fields(template: str, answer_field: str) -> list[str]:
    """Fields the template names; it must name ``answer_field`` exactly once."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise DataError(f"--template {template!r}: {error}") from None
    if any(not name or not name.isidentifier() for name in fields):
        raise DataError(f"--template {template!r}: placeholders must be field names like {{question}}")
    if fields.count(answer_field) != 1:
        raise DataError(f"--template {template!r}: must contain {{{answer_field}}} exactly once (the answer)")
    return fields


def read_task_records(path: str | Path, fields: list[str]) -> list[dict]:
    """The records of a task file, each checked to have every field the template names."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: task file does not exist (expected JSON lines with fields {sorted(set(fields))})")
    records = []
    for where, record in json_records(path):
        missing = sorted(set(fields) - set(record))
        if missing:
            raise DataError(f"{where}: record has no {missing} field (the template needs {sorted(set(fields))}; "
                            f"fields: {sorted(record)})")
        records.append(record)
    if not records:
        raise DataError(f"{path}: task file has no records")
    return records


def format_prompts(
    records: list[dict], template: str, answer_field: str = "answer", shots: int = 5, num_examples: int | None = None
) -> list[TaskPrompt]:
    """``num_examples`` k-shot prompts (all queries when None) from records: the first ``shots`` are the examples."""
    template_fields(template, answer_field)
    head, _, tail = template.partition("{" + answer_field + "}")
    if shots < 0 or (num_examples is not None and num_examples < 1):
        raise DataError(f"--num-shots must be >= 0 and --num-examples >= 1, got {shots} and {num_examples}")
    if len(records) <= shots:
        raise DataError(f"{len(records)} task records: need more than --num-shots {shots} (the rest are queries)")
    solved = SEPARATOR.join(template.format_map(record) for record in records[:shots])
    context = solved + SEPARATOR if solved else ""
    queries = records[shots:] if num_examples is None else records[shots : shots + num_examples]
    return [
        TaskPrompt(context + head.format_map(record), str(record[answer_field]) + tail.format_map(record))
        for record in queries
    ]


def tokenize_prompts(
    encode: Callable[[str], list[int]], prompts: list[TaskPrompt], eos_token_id: int, max_tokens: int
) -> list[PromptTokens]:
    """Token ids of each prompt; a prompt too long loses its FIRST tokens (the oldest examples), never the answer."""
    tokens = []
    for prompt in prompts:
        prompt_ids, answer_ids = list(encode(prompt.prompt)), list(encode(prompt.answer)) + [eos_token_id]
        if len(answer_ids) >= max_tokens:
            raise DataError(f"a task answer is {len(answer_ids)} tokens with eos: raise the token limit "
                            f"({max_tokens}) above it so the prompt keeps some context")
        room = max_tokens - len(answer_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - room :] if len(prompt_ids) > room else prompt_ids
        tokens.append(PromptTokens(prompt_ids + answer_ids, len(prompt_ids)))
    return tokens
