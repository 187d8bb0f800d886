"""The paper's fine-tune protocol in the subset evaluation: answer-only fine-tune loss and epochs (per-layer budgets
and task-prompt calibration: test_subset_experiment.py)."""

import pytest
import torch

from emo_plugin.evaluation.analysis.subset_finetune import finetune_subset, restoring_weights, steps_for_epochs
from tests.evaluation.analysis.test_subset_evaluation import VOCAB, random_documents
from tests.evaluation.analysis.tiny_checkpoint import tiny_emo_model


def answer_only_loss(model, documents, answer_starts):
    """Reference: mean cross-entropy over the answer tokens only, one unpadded document per forward."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for doc, start in zip(documents, answer_starts):
            ids = torch.tensor([doc])
            logits = model(input_ids=ids, use_cache=False).logits[0].double()
            nll += torch.nn.functional.cross_entropy(logits[start - 1 : -1], ids[0, start:], reduction="sum").item()
            count += len(doc) - start
    return nll / count


def test_answer_only_loss_counts_only_the_answer_tokens():
    model = tiny_emo_model(VOCAB)
    documents = random_documents(3, seed=5)
    starts = [len(doc) - 3 for doc in documents]  # the last two tokens and eos are the answer
    expected = answer_only_loss(model, documents, starts)
    with restoring_weights(model):
        losses = finetune_subset(model, documents, 1, 1e-3, 3, 0, "cpu", answer_starts=starts)
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    with restoring_weights(model):
        all_tokens = finetune_subset(model, documents, 1, 1e-3, 3, 0, "cpu")
    assert abs(all_tokens[0] - expected) > 1e-3  # the option changes what is trained on


@pytest.mark.parametrize("documents, batch, epochs, steps", [(10, 32, 1, 1), (64, 32, 1, 2), (65, 32, 2, 6)])
def test_epochs_become_steps(documents, batch, epochs, steps):
    assert steps_for_epochs(documents, batch, epochs) == steps
