"""The paper's selection protocol in the subset evaluation: answer-only fine-tune loss, epochs, per-layer budgets
and task-prompt calibration (emo-evaluate-subsets)."""

import json
import math

import pytest
import torch

from emo_plugin.cli import evaluate_subsets
from emo_plugin.evaluation.analysis.subset_finetune import finetune_subset, restoring_weights, steps_for_epochs
from tests.evaluation.analysis.test_subset_evaluation import VOCAB, random_documents
from tests.evaluation.analysis.tiny_checkpoint import DOMAIN_WORDS, tiny_emo_model


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


def write_task_file(path):
    """Two questions per domain of the tiny corpus: one shot, one query."""
    with path.open("w") as stream:
        for domain, words in DOMAIN_WORDS.items():
            for i in range(2):
                record = {"question": " ".join(words[i : i + 4]), "answer": words[i + 5], "domain": domain}
                stream.write(json.dumps(record) + "\n")
    return path


def test_evaluate_subsets_compares_per_layer_budgets_and_selects_from_task_prompts(tiny_checkpoint, tmp_path):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    out = tmp_path / "subsets"
    argv = ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
            "--max-eval-tokens-per-domain", "100000", "--fractions", "1", "0.5", "--layer-budgets", "100%,3", "7x2",
            "--task-prompts", str(write_task_file(tmp_path / "task.jsonl")), "--num-shots", "1",
            "--finetune-epochs", "1", "--finetune-loss", "answer", "--finetune-lr", "1e-3"]
    assert evaluate_subsets.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["full_model_reproduced_by_100%"] is True
    for domain in results["domains"].values():
        assert domain["calibration_documents"] == 1 and domain["heldout_documents"] == 8  # all corpus documents
        assert domain["subsets"]["100%,3"]["kept_experts_per_layer"] == [8, 2]
        assert domain["subsets"]["7x2"]["kept_experts_per_layer"] == [6, 6]
        assert [domain["subsets"][s]["kept_slots"] for s in ("100%", "50%", "100%,3", "7x2")] == [18, 8, 12, 14]
        assert len(domain["subsets"]["50%"]["finetune_train_losses"]) == 1  # one prompt, one epoch
        assert math.isfinite(domain["subsets"]["7x2"]["finetuned_loss"])
    assert set(results["mean"]["subsets"]) == {"100%", "50%", "100%,3", "7x2"}
    selection = json.loads((out / "selections" / "law" / "100%,3.json").read_text())
    assert [len(selection[k]) for k in ("0", "1")] == [8, 2]
    table = (out / "results.md").read_text()
    assert "| 100%,3 | 7x2 |" in table and "answer tokens" in table
    assert "1-shot task prompts (at most 8 per domain)" in table


def test_evaluate_subsets_refuses_answer_loss_without_prompts_and_bad_budgets(tiny_checkpoint, tmp_path, capsys):
    checkpoint, corpus, tokenizer = tiny_checkpoint
    argv = ["--checkpoint", str(checkpoint), "--corpus", str(corpus), "--tokenizer", str(tokenizer),
            "--out", str(tmp_path / "o"), "--calib-docs", "2", "--max-eval-tokens-per-domain", "50", "--fractions", "1"]
    assert evaluate_subsets.main(argv + ["--finetune-steps", "1", "--finetune-loss", "answer"]) == 2
    assert "--finetune-loss answer needs --task-prompts" in capsys.readouterr().err
    assert evaluate_subsets.main(argv + ["--layer-budgets", "4x3"]) == 2
    assert "subset 4x3: --keep-per-layer has 3 entries, expected one per layer (2 layers)" in capsys.readouterr().err
    assert evaluate_subsets.main(argv + ["--fractions", "0.125"]) == 2
    assert "subset 12.5%: --keep 0.125 leaves 1 of 9 slots" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_subsets.main(argv + ["--layer-budgets", "4,,4"])
    assert "entry 2 is empty" in capsys.readouterr().err
