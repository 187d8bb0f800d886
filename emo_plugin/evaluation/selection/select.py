"""Choose, layer by layer, the routed experts to keep for a task.

Layer L is scored with layers < L already restricted to their chosen experts (``set_expert_mask``), so each
choice sees the hidden states the pruned model will actually produce (AI2's greedy layer-wise selection).
The forward pass stops right after layer L's MoE block, so a selection costs about L/2 full passes per layer.
Shared experts are never candidates: they are always kept.
"""

from __future__ import annotations

import torch

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection.keep import kept_slots
from emo_plugin.evaluation.selection.scoring import METHODS


class _LayerScored(Exception):
    """Raised by the observer once the scored layer has run: the layers after it are not needed."""


def routed_to_keep(keep: float, model, layer_idx: int) -> int:
    """Kept routed experts of a layer from ``keep``: a fraction (<= 1) or a whole count (> 1), both of ALL expert
    slots (shared included, as AI2 counts "16 of 128"; rule in ``keep.py``); shared experts are among the kept."""
    slots, shared = model.config.expert_slots(layer_idx)
    routed_per_token = model.num_routed_experts_per_token(layer_idx)
    kept = kept_slots(keep, slots)
    routed = min(kept - shared, model.num_routed_experts(layer_idx))
    if routed < routed_per_token:
        raise ConversionError(
            f"--keep {keep:g} leaves {kept} of {slots} slots = {routed} routed experts, fewer than the "
            f"{routed_per_token} each token needs (plus {shared} shared)"
        )
    return routed


def kept_expert_masks(model, selection: dict[int, list[int]]) -> dict[int, torch.Tensor]:
    """{layer: bool [routed experts], True = kept} for `EmoForCausalLM.set_expert_mask` from {layer: kept ids}."""
    masks = {}
    for layer_idx, kept in selection.items():
        masks[layer_idx] = torch.zeros(model.num_routed_experts(layer_idx), dtype=torch.bool)
        masks[layer_idx][torch.as_tensor(kept, dtype=torch.long)] = True
    return masks


def layer_scores(model, layer_idx: int, documents: list[torch.Tensor], method: str, seed: int) -> torch.Tensor:
    """Scores of the layer's routed experts under the model's current expert mask."""
    scorer = METHODS[method](model, layer_idx, seed)
    if scorer.needs_forward:

        def observe(event):
            scorer.observe(event)
            raise _LayerScored

        with model.observe_routing(observe, layers=[layer_idx]):
            for ids in documents:
                try:
                    model(input_ids=ids, use_cache=False)
                except _LayerScored:
                    pass
    return scorer.scores()


@torch.no_grad()
def select_experts(model, documents: list[torch.Tensor], *, method: str = "greedy", keep: float = 0.25, seed: int = 0):
    """{layer index: sorted kept routed expert ids}; the model's expert mask is left at the selection."""
    if method not in METHODS:
        raise ConversionError(f"unknown selection method {method!r}; choose from {tuple(METHODS)}")
    model.eval()
    chosen: dict[int, list[int]] = {}
    for layer_idx in range(model.config.num_hidden_layers):
        count = routed_to_keep(keep, model, layer_idx)
        model.set_expert_mask(kept_expert_masks(model, chosen))
        order = torch.sort(layer_scores(model, layer_idx, documents, method, seed), descending=True, stable=True)
        chosen[layer_idx] = sorted(order.indices[:count].tolist())
    model.set_expert_mask(kept_expert_masks(model, chosen))
    return chosen
