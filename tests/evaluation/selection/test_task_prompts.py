"""Calibration from k-shot task prompts: formatting and tokenisation with the answer marked (the command:
tests/cli/test_select_experts.py)."""


import pytest

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
