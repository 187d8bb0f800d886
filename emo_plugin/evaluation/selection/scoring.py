"""Per-expert scores of one MoE layer over the calibration tokens (routed experts only), by method name.

* ``greedy`` (AI2's default): mean over tokens of the router softmax probability of each routed expert,
  with already-dropped experts at −inf (probability 0) — docs/method.md §10.
* ``easy_ep`` (output-aware, EASY-EP): Σ_t g_{i,t}·‖E_i(h_t)‖·(1 − cos(h_t, h_t + MoE(h_t))) where h_t is the
  MoE input, g the gate weight of a chosen expert (0 if not chosen) and MoE(h_t) the layer output: experts
  that carry large, direction-changing outputs on tokens the layer changes a lot score high.
* ``easy_ep_one_pass`` (EASY-EP as AI2 run it): the same score from ONE pass through the unpruned model,
  clamped at 0, instead of layer by layer with earlier layers pruned (``conditioned = False``). With the score
  as written every term is >= 0, so the clamp only matters for scores that come out negative by rounding; it
  is kept so the method is AI2's as they describe it.
* ``random``: seeded uniform scores (the baseline).

Scorers read the layer through `EmoForCausalLM.observe_routing` events (``observe``), except ``random``, which
needs no forward pass (``needs_forward = False``). ``conditioned`` says whether ``select.py`` scores a layer
with the earlier layers already pruned (True) or every layer in one pass through the unpruned model (False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emo_plugin.hf.modeling_emo import RoutingEvent


class MeanProbability:
    """``greedy``: mean router probability of each routed expert."""

    needs_forward = True
    conditioned = True

    def __init__(self, model, layer_idx: int, seed: int):
        self.total = torch.zeros(model.num_routed_experts(layer_idx), dtype=torch.float64)
        self.tokens = 0

    @torch.no_grad()
    def observe(self, event: RoutingEvent) -> None:
        self.tokens += event.hidden_TH.shape[0]
        self.total += event.probabilities_TR.sum(0).double().cpu()

    def scores(self) -> torch.Tensor:
        return self.total / max(self.tokens, 1)


class OutputAware(MeanProbability):
    """``easy_ep``: gate weight × expert output norm × how much the layer turns the token's hidden state."""

    def __init__(self, model, layer_idx: int, seed: int):
        super().__init__(model, layer_idx, seed)
        self.model, self.layer_idx = model, layer_idx

    @torch.no_grad()
    def observe(self, event: RoutingEvent) -> None:
        x_TH, experts_TK = event.hidden_TH, event.expert_idx_TK
        self.tokens += x_TH.shape[0]
        change_T = 1 - F.cosine_similarity(x_TH.float(), x_TH.float() + event.output_TH.float(), dim=-1)
        for expert in experts_TK.unique().tolist():
            token_idx, choice_idx = torch.where(experts_TK == expert)
            norms = self.model.routed_expert_output(self.layer_idx, expert, x_TH[token_idx]).float().norm(dim=-1)
            contribution = (event.gate_weights_TK[token_idx, choice_idx] * norms * change_T[token_idx]).sum()
            self.total[expert] += contribution.double().cpu()


class OutputAwareOnePass(OutputAware):
    """``easy_ep_one_pass``: the ``easy_ep`` score of the unpruned model, clamped at 0 (AI2's Easy-EP)."""

    conditioned = False

    def scores(self) -> torch.Tensor:
        return super().scores().clamp(min=0)


class RandomBaseline:
    """``random``: seeded uniform scores, different per layer."""

    needs_forward = False
    conditioned = True

    def __init__(self, model, layer_idx: int, seed: int):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + layer_idx)
        self._scores = torch.rand(model.num_routed_experts(layer_idx), generator=generator)

    def scores(self) -> torch.Tensor:
        return self._scores


METHODS = {
    "greedy": MeanProbability,
    "easy_ep": OutputAware,
    "easy_ep_one_pass": OutputAwareOnePass,
    "random": RandomBaseline,
}
