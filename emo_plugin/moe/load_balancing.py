"""EMO's global Switch load-balancing loss with a correctly scaled gradient.

    L = (R / k) · Σ_i f_i · P_i,   f_i = n_i / T,   P_i = (Σ_t s_{t,i}) / T

over the R routed experts (inert slots excluded), where n_i ((token, choice) assignments to expert i) and T
(non-padding tokens) are summed over every rank that holds different tokens (data × context × sequence-parallel
shards) and s are the pool-masked softmax scores. Each rank can only differentiate through its own tokens'
scores, so it computes

    L_r = (R / k) · Σ_i f_i · (Σ_{t local} s_{t,i}) / T · G

with G the data-parallel size. Gradients are averaged over data × context ranks and summed over
sequence-parallel shards (Megatron does both for the router weight); Megatron's schedules multiply the
aux-loss gradient by the context-parallel size, which compensates the context part of the averaging, so
G = data-parallel size gives exactly ∇L (``megatron_compat.aux_loss_gradient_averaging_ranks``). Megatron's own
``global_aux_loss`` divides local probabilities by the global token count without G and is G times too weak
(NVIDIA/Megatron-LM#3672).
"""

from __future__ import annotations

import torch


def expert_counts(routing_map_TR: torch.Tensor, valid_T: torch.Tensor | None) -> torch.Tensor:
    """(token, choice) assignments per routed expert, padding excluded; float for all-reduce."""
    routed_TR = routing_map_TR if valid_T is None else routing_map_TR & valid_T.unsqueeze(-1)
    return routed_TR.sum(dim=0, dtype=torch.float32)


def local_score_sums(scores_TR: torch.Tensor, valid_T: torch.Tensor | None) -> torch.Tensor:
    """Σ over local non-padding tokens of the routing scores of the routed experts (differentiable)."""
    if valid_T is not None:
        scores_TR = scores_TR * valid_T.unsqueeze(-1)
    return scores_TR.sum(dim=0)


def global_load_balancing_loss(
    score_sums_R: torch.Tensor,
    global_counts_R: torch.Tensor,
    global_tokens: torch.Tensor,
    *,
    topk: int,
    grad_average_ranks: int,
) -> torch.Tensor:
    """This rank's share L_r (see module docstring); the mean of L_r over the averaging ranks is L."""
    num_routed = global_counts_R.shape[-1]
    tokens = global_tokens.clamp(min=1)
    frequencies_R = global_counts_R / tokens
    return (num_routed / topk) * torch.dot(frequencies_R, score_sums_R.float()) / tokens * grad_average_ranks
