"""Metric functions on hand-made inputs, and the routing recorder against the model's own routing."""

import math

import numpy as np
import pytest
import torch

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.batching import document_batches
from emo_plugin.evaluation.analysis.corpus import read_labelled_corpus
from emo_plugin.evaluation.analysis.expert_usage import routing_entropies, top_expert_share, usage_by_domain
from emo_plugin.evaluation.analysis.pool_overlap import overlap_within_between, pairwise_jaccard, top_p_pools
from emo_plugin.evaluation.analysis.routing_recorder import record_document_routing
from emo_plugin.evaluation.analysis.text_encoding import encode_documents
from tests.evaluation.analysis.tiny_checkpoint import tiny_emo_model


def test_pools_and_jaccard():
    prob_sum = np.array([[5.0, 4, 1, 0], [5, 0, 4, 1], [0, 1, 4, 5]])
    pools = top_p_pools(prob_sum, 2)
    assert pools.tolist() == [[True, True, False, False], [True, False, True, False], [False, False, True, True]]
    jaccard = pairwise_jaccard(pools)
    assert jaccard[0, 1] == pytest.approx(1 / 3) and jaccard[0, 2] == 0 and jaccard[1, 1] == 1
    overlap = overlap_within_between(jaccard, np.array([0, 0, 1]))
    assert overlap["pool_overlap_within"] == pytest.approx(1 / 3)
    assert overlap["pool_overlap_between"] == pytest.approx((0 + 1 / 3) / 2)


def test_usage_share_and_entropies():
    slot_counts = np.array([[3.0, 1, 0, 0], [1, 3, 0, 0], [0, 0, 2, 2]])
    usage = usage_by_domain(slot_counts, np.array([0, 0, 1]), 2)
    assert usage.tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]
    assert top_expert_share(usage, 0.25).tolist() == [0.5, 0.5]
    entropies = routing_entropies(slot_counts, np.array([1.0, 2.0, 3.0]), np.array([4, 4, 4]))
    assert entropies["token_entropy"] == pytest.approx(0.5)
    assert entropies["document_entropy"] == pytest.approx(
        (2 * (-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))) + math.log(2)) / 3
    )
    assert entropies["corpus_entropy"] == pytest.approx(
        -(2 * (1 / 3) * math.log(1 / 3) + 2 * (1 / 6) * math.log(1 / 6))
    )
    assert entropies["max_entropy"] == pytest.approx(math.log(4))


def test_recorder_sees_the_models_routing_and_masks():
    model = tiny_emo_model(64)
    keep_layer1 = torch.tensor([True] * 4 + [False] * 4)
    model.set_expert_mask({1: keep_layer1})
    docs = [[5, 6, 7, 8, 2], [9, 10, 11], [12, 13, 14, 15, 16, 17, 2]]
    routing = record_document_routing(model, docs, document_batches(docs, 2, pad_id=0))
    assert routing.num_tokens.tolist() == [5, 3, 7]
    for layer in range(2):
        assert routing.slot_counts[layer].sum(1).tolist() == [10, 6, 14]  # 2 routed experts per token
        np.testing.assert_allclose(routing.prob_sum[layer].sum(1), [5, 3, 7], rtol=1e-6)
    assert routing.slot_counts[1][:, 4:].sum() == 0 and routing.prob_sum[1][:, 4:].sum() == 0
    assert all(layer.mlp.routing_observer is None for layer in model.model.layers)  # the observer is gone
    # the recorded probabilities of a lone document equal the router softmax of its hidden states
    captured = {}
    block = model.model.layers[0].mlp
    handle = block.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    with torch.no_grad():
        model.model(input_ids=torch.tensor([docs[1]]))
        logits = captured["x"][0].float() @ block.gate.weight.float()[:8].T
        expected = torch.softmax(logits, dim=-1).sum(0).double().numpy()
    handle.remove()
    np.testing.assert_allclose(routing.prob_sum[0][1], expected, rtol=1e-5)


def test_encoding_budget_eos_and_vocab_check():
    encode = lambda text: [ord(c) - 90 for c in text]  # noqa: E731
    docs = encode_documents(
        ["abcd", "", "efghij", "kl"], encode, eos_token_id=2, vocab_size=100, max_doc_tokens=4, token_budget=7
    )
    assert docs == [[7, 8, 9, 10], [11, 12, 13]]  # the empty text is skipped, the second cut to the budget
    assert encode_documents(["ab"], encode, 2, 100, 8) == [[7, 8, 2]]
    with pytest.raises(AnalysisError, match="vocab_size is 10"):
        encode_documents(["z"], encode, 2, vocab_size=10, max_doc_tokens=8)


def test_corpus_errors_name_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "topic": 1}\n\n{"text": "b", "topic": "x", "id": 7}\n')
    assert [(d.text, d.domain) for d in read_labelled_corpus(path, domain_field="topic")] == [("a", "1"), ("b", "x")]
    path.write_text('{"text": "a", "topic": 1}\n\n{"text": 3, "topic": "b"}\n')
    with pytest.raises(AnalysisError, match=r"c.jsonl:3: field 'text' must be a string"):
        read_labelled_corpus(path, domain_field="topic")
    path.write_text("not json\n")
    with pytest.raises(AnalysisError, match=r"c.jsonl:1: corrupt JSON"):
        read_labelled_corpus(path)


def test_text_encoder_falls_back_to_the_checkpoints_sentencepiece_model(tiny_checkpoint, tmp_path):
    import shutil

    from emo_plugin.evaluation.analysis.text_encoding import load_text_encoder

    checkpoint, _, tokenizer = tiny_checkpoint
    with pytest.raises(AnalysisError, match="no tokenizer in the checkpoint"):
        load_text_encoder(checkpoint)
    shutil.copy(tokenizer, tmp_path / "tokenizer.model")
    assert load_text_encoder(tmp_path)("hello world") == load_text_encoder(checkpoint, tokenizer)("hello world")
