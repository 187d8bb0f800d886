"""Calibration from k-shot task prompts: formatting, tokenisation with the answer marked, and the CLI."""

import json

import pytest
import torch

from emo_plugin.errors import DataError
from emo_plugin.evaluation.selection.task_prompts import (
    TaskPrompt,
    format_prompts,
    read_task_records,
    template_fields,
    tokenize_prompts,
)

RECORDS = [{"question": f"q{i}?", "answer": f"a{i}", "topic": "math"} for i in range(5)]
TEMPLATE = "Q: {question}\nA: {answer}."


def test_k_shot_prompts_are_the_solved_examples_then_the_query():
    prompts = format_prompts(RECORDS, TEMPLATE, "answer", shots=2)
    shots = "Q: q0?\nA: a0.\n\nQ: q1?\nA: a1.\n\n"
    assert prompts == [TaskPrompt(shots + f"Q: q{i}?\nA: ", f"a{i}.") for i in (2, 3, 4)]
    assert format_prompts(RECORDS, TEMPLATE, "answer", shots=2, num_examples=1) == prompts[:1]
    assert format_prompts(RECORDS, TEMPLATE, "answer", shots=0, num_examples=2) == [
        TaskPrompt("Q: q0?\nA: ", "a0."), TaskPrompt("Q: q1?\nA: ", "a1.")
    ]


@pytest.mark.parametrize("template, message", [
    ("Q: {question}", r"must contain \{answer\} exactly once"),
    ("{answer} {answer}", r"must contain \{answer\} exactly once"),
    ("{0} {answer}", "placeholders must be field names"),
    ("{question {answer}", "--template"),
])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(DataError, match=message):
        template_fields(template, "answer")


def test_too_few_records_and_missing_fields_are_named(tmp_path):
    with pytest.raises(DataError, match="5 task records: need more than --num-shots 5"):
        format_prompts(RECORDS, TEMPLATE, "answer", shots=5)
    path = tmp_path / "task.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"task.jsonl:2: record has no \['answer'\] field"):
        read_task_records(path, ["question", "answer"])
    with pytest.raises(DataError, match="task file does not exist"):
        read_task_records(tmp_path / "nope.jsonl", ["answer"])


def test_tokens_mark_the_answer_and_long_prompts_lose_their_oldest_tokens():
    encode = lambda text: [ord(c) for c in text]  # noqa: E731
    prompt = TaskPrompt("abcdef", "XY")
    full = tokenize_prompts(encode, [prompt], eos_token_id=1, max_tokens=100)[0]
    assert full.ids == [97, 98, 99, 100, 101, 102, 88, 89, 1] and full.answer_start == 6
    cut = tokenize_prompts(encode, [prompt], eos_token_id=1, max_tokens=5)[0]
    assert cut.ids == [101, 102, 88, 89, 1] and cut.answer_start == 2
    with pytest.raises(DataError, match="a task answer is 3 tokens with eos"):
        tokenize_prompts(encode, [prompt], eos_token_id=1, max_tokens=3)


def test_select_experts_tool_selects_from_task_prompts(hf_folder, tmp_path, capsys):
    from transformers import AutoTokenizer

    from emo_plugin.cli import select_experts as tool
    from emo_plugin.evaluation.selection import select_experts
    from emo_plugin.hf import EmoForCausalLM

    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    typed = TEMPLATE.replace("\n", "\\n")  # as typed in a shell: backslash n
    args = ["--model", str(hf_folder), "--task-prompts", str(task), "--template", typed, "--num-shots", "2",
            "--num-examples", "all", "--keep", "4", "--selection-json", str(tmp_path / "sel.json")]
    assert tool.main(args) == 0
    record = json.loads((tmp_path / "sel.json").read_text())
    assert record["num_documents"] == 3 and record["num_shots"] == 2

    tokenizer = AutoTokenizer.from_pretrained(str(hf_folder))
    model = EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32).eval()
    eos = model.config.eos_token_id
    shots = "Q: q0?\nA: a0.\n\nQ: q1?\nA: a1.\n\n"
    docs = [torch.tensor([tokenizer.encode(shots + f"Q: q{i}?\nA: ", add_special_tokens=False)
                          + tokenizer.encode(f"a{i}.", add_special_tokens=False) + [eos]]) for i in (2, 3, 4)]
    expected = select_experts(model, docs, method="greedy", keep=4)
    assert record["layers"] == {str(k): v for k, v in expected.items()}

    assert tool.main(args[:-2] + ["--selection-json", str(tmp_path / "s2.json"), "--template", "{question}"]) == 2
    assert "must contain {answer} exactly once" in capsys.readouterr().err
