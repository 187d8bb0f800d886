"""The global load-balancing loss pieces against values counted by hand (load_balancing.py's formula)."""

import torch

from emo_plugin.moe.load_balancing import expert_counts, global_load_balancing_loss, local_score_sums

# 3 tokens × 4 experts, top-2; the third token is padding.
ROUTING_MAP = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)
SCORES = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25]])
VALID = torch.tensor([True, True, False])


def test_counts_and_score_sums_skip_padding():
    assert expert_counts(ROUTING_MAP, VALID).tolist() == [1.0, 2.0, 1.0, 0.0]
    assert expert_counts(ROUTING_MAP, None).tolist() == [2.0, 2.0, 1.0, 1.0]
    torch.testing.assert_close(local_score_sums(SCORES, VALID), torch.tensor([0.6, 0.9, 0.5, 0.0]))
    torch.testing.assert_close(local_score_sums(SCORES, None), torch.tensor([0.85, 1.15, 0.75, 0.25]))


def test_loss_value_and_gradient_by_hand():
    """L = (R/k) Σ f_i P_i with f = counts / T, P = score sums / T, times G: (4/2) · (0.5·0.6 + 1·0.9 + 0.5·0.5) / 2
    = 1.45 for G = 1, 2.9 for G = 2; ∂L/∂(score sum i) = (R/k) · f_i / T · G = f_i · G."""
    scores = SCORES.clone().requires_grad_()
    counts, tokens = expert_counts(ROUTING_MAP, VALID), VALID.sum().float()
    for ranks, expected in ((1, 1.45), (2, 2.9)):
        loss = global_load_balancing_loss(
            local_score_sums(scores, VALID), counts, tokens, topk=2, grad_average_ranks=ranks
        )
        torch.testing.assert_close(loss, torch.tensor(expected))
        (grad,) = torch.autograd.grad(loss, scores)
        expected_grad = torch.tensor([[0.5, 1.0, 0.5, 0.0]] * 2 + [[0.0] * 4]) * ranks
        torch.testing.assert_close(grad, expected_grad)


def test_one_token_and_no_tokens():
    """T = 1: f = counts, L = (4/2) · (1·0.5 + 1·0.5) / 1 = 2; no valid tokens: loss 0, not NaN."""
    one = global_load_balancing_loss(
        torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor(1.0), topk=2,
        grad_average_ranks=1,
    )
    torch.testing.assert_close(one, torch.tensor(2.0))
    none = global_load_balancing_loss(torch.zeros(4), torch.zeros(4), torch.tensor(0.0), topk=2, grad_average_ranks=1)
    assert none.item() == 0.0
