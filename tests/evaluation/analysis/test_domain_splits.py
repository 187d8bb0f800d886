"""Calibration and held-out token ids per domain (emo_plugin/evaluation/analysis/domain_splits.py): the first
documents calibrate and the rest is held out, task prompts calibrate instead of documents, and a split that cannot
be made is refused naming the option."""

import argparse
import json

import pytest

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.checkpoint import load_emo_model
from emo_plugin.evaluation.analysis.domain_splits import split_domains
from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder
from emo_plugin.evaluation.selection.task_prompts import DEFAULT_TEMPLATE


def settings(corpus, **changes):
    """Every attribute split_domains reads (the options of emo-evaluate-subsets and emo-exclude-experts)."""
    fields = dict(corpus=corpus, text_field="text", domain_field="domain", domains=None, calib_docs=2,
                  max_doc_tokens=None, max_eval_tokens_per_domain=100_000, task_prompts=None,
                  template=DEFAULT_TEMPLATE, answer_field="answer", num_shots=1, num_examples=None)
    return argparse.Namespace(**{**fields, **changes})


@pytest.fixture
def model_and_encoder(tiny_checkpoint):
    checkpoint, _, tokenizer = tiny_checkpoint
    return load_emo_model(checkpoint), load_text_encoder(checkpoint, tokenizer)


def test_first_documents_calibrate_and_the_rest_is_held_out(tiny_checkpoint, model_and_encoder):
    model, encode = model_and_encoder
    corpus = tiny_checkpoint[1]
    splits = split_domains(settings(corpus), encode, model)
    assert sorted(splits) == ["code", "cooking", "law"]
    law = [json.loads(line)["text"] for line in corpus.read_text().splitlines() if '"law"' in line]
    calibration, heldout, answer_starts = splits["law"]
    assert len(calibration) == 2 and len(heldout) == 6 and answer_starts is None  # 8 documents per domain
    assert calibration[0][:-1] == encode(law[0]) and heldout[0][:-1] == encode(law[2])  # each ends with eos
    assert list(split_domains(settings(corpus, domains=["law", "code"]), encode, model)) == ["law", "code"]
    short = split_domains(settings(corpus, max_eval_tokens_per_domain=3), encode, model)
    assert short["law"][1] == [heldout[0][:3]]  # the held-out budget cuts the documents, not the calibration


def test_task_prompts_calibrate_and_every_document_is_held_out(tiny_checkpoint, model_and_encoder, tmp_path):
    model, encode = model_and_encoder
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}", "domain": domain}) + "\n"
                             for domain in ("law", "code") for i in range(3)))
    splits = split_domains(settings(tiny_checkpoint[1], domains=["law", "code"], task_prompts=tasks), encode, model)
    calibration, heldout, answer_starts = splits["law"]
    assert len(calibration) == 2 and len(heldout) == 8  # 1 shot, 2 queries; no corpus document calibrates
    assert all(0 < start < len(ids) for ids, start in zip(calibration, answer_starts))
    with pytest.raises(AnalysisError, match=r"tasks.jsonl: no task records with domain \['cooking'\]"):
        split_domains(settings(tiny_checkpoint[1], task_prompts=tasks), encode, model)


def test_refusals_name_the_option(tiny_checkpoint, model_and_encoder):
    model, encode = model_and_encoder
    corpus = tiny_checkpoint[1]
    with pytest.raises(AnalysisError, match=r"no documents with domain \['poetry'\] \(have \['code', 'cooking', 'law'"):
        split_domains(settings(corpus, domains=["poetry"]), encode, model)
    with pytest.raises(AnalysisError, match="domain 'code' has 8 documents: need more than --calib-docs 8"):
        split_domains(settings(corpus, calib_docs=8), encode, model)
