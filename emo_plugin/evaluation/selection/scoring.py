"""Per-expert scores of one MoE layer over the calibration tokens (routed experts only).

* ``greedy`` (AI2's default): mean over tokens of the router softmax probability of each routed expert,
  with already-dropped experts at −inf (probability 0) — docs/method.md §10.
* ``easy_ep`` (output-aware, EASY-EP): Σ_t g_{i,t}·‖E_i(h_t)‖·(1 − cos(h_t, h_t + MoE(h_t))) where h_t is the
  MoE input, g the gate weight of a chosen expert (0 if not chosen) and MoE(h_t) the layer output: experts
  that carry large, direction-changing outputs on tokens the layer changes a lot score high.
* ``random``: seeded uniform scores (the baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LayerScorer:
    """Accumulates one layer's scores from forward-hook calls of its ``EmoSparseMoeBlock``."""

    def __init__(self, block, method: str):
        self.block, self.method = block, method
        self.total = torch.zeros(block.n_routed, dtype=torch.float64)
        self.tokens = 0

    @torch.no_grad()
    def __call__(self, block, args, output) -> None:
        x_BTH = args[0]
        doc_ids = args[1] if len(args) > 1 else None
        valid = args[2] if len(args) > 2 else None
        x_NH = x_BTH.reshape(-1, x_BTH.shape[-1])
        self.tokens += x_NH.shape[0]
        if self.method == "greedy":
            logits_NR = F.linear(x_NH.float(), block.gate.weight.float())[:, : block.n_routed]
            if block.kept_routed_experts_R is not None:
                logits_NR = logits_NR.masked_fill(~block.kept_routed_experts_R, float("-inf"))
            self.total += torch.softmax(logits_NR, dim=-1).sum(0).double()
            return
        flat = lambda t: None if t is None else t.reshape(-1)
        gates_NK, experts_NK = block.route(x_NH, flat(doc_ids), flat(valid))
        out_NH = output.reshape(-1, output.shape[-1]).float()
        change_N = 1 - F.cosine_similarity(x_NH.float(), x_NH.float() + out_NH, dim=-1)
        for expert in experts_NK.unique().tolist():
            token_idx, choice_idx = torch.where(experts_NK == expert)
            norms = block.experts[expert](x_NH[token_idx]).float().norm(dim=-1)
            self.total[expert] += (gates_NK[token_idx, choice_idx] * norms * change_N[token_idx]).sum().double()

    def scores(self) -> torch.Tensor:
        return self.total / max(self.tokens, 1)


def random_scores(n_routed: int, seed: int, layer_idx: int) -> torch.Tensor:
    return torch.rand(n_routed, generator=torch.Generator().manual_seed(seed * 1_000_003 + layer_idx))
