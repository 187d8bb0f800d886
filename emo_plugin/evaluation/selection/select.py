"""Choose, layer by layer, the routed experts to keep for a task.

Conditioned methods (``greedy``, ``easy_ep``, ``random``): layer L is scored with layers < L already restricted
to their chosen experts (``set_expert_mask``), so each choice sees the hidden states the pruned model will
actually produce (AI2's greedy layer-wise selection). The forward pass stops right after layer L's MoE block,
so a selection costs about L/2 full passes per layer. One-pass methods (``easy_ep_one_pass``, a scorer with
``conditioned = False``) score every layer in a single pass through the unpruned model.
Shared experts are never candidates: they are always kept.

``keep`` is one value for every layer (``--keep``) or a list with one value per layer (``--keep-per-layer``,
``layer_budget.py``); each value follows the ``keep.py`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from emo_plugin.errors import ConversionError
from emo_plugin.evaluation.selection.keep import kept_slots
from emo_plugin.evaluation.selection.scoring import METHODS


class _LayerScored(Exception):
    """Raised by the observer once the scored layer has run: the layers after it are not needed."""


def routed_to_keep(keep: float, model, layer_idx: int, flag: str = "--keep") -> int:
    """Kept routed experts of a layer from ``keep``: a fraction (<= 1) or a whole count (> 1), both of ALL Hugging Face
    experts (shared included, as AI2 counts "16 of 128"; rule in ``keep.py``); shared experts are among the kept."""
    slots, shared = model.config.expert_slots(layer_idx)
    routed_per_token = model.num_routed_experts_per_token(layer_idx)
    kept = kept_slots(keep, slots, flag)
    routed = min(kept - shared, model.num_routed_experts(layer_idx))
    if routed < routed_per_token:
        raise ConversionError(
            f"{flag} {keep:g} leaves {kept} of {slots} slots = {routed} routed experts, fewer than the "
            f"{routed_per_token} each token needs (plus {shared} shared)"
        )
    return routed


def routed_counts(keep: float | Sequence[float], model) -> list[int]:
    """Kept routed experts of every layer; a per-layer ``keep`` must have one entry per layer."""
    layers = model.config.num_hidden_layers
    if isinstance(keep, (int, float)):
        return [routed_to_keep(keep, model, layer_idx) for layer_idx in range(layers)]
    if len(keep) != layers:
        raise ConversionError(f"--keep-per-layer has {len(keep)} entries, expected one per layer ({layers} layers)")
    return [routed_to_keep(k, model, i, f"--keep-per-layer layer {i}:") for i, k in enumerate(keep)]


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


def one_pass_scores(model, documents: list[torch.Tensor], method: str, seed: int) -> list[torch.Tensor]:
    """Scores of every layer's routed experts from one pass through the model as it is (no earlier pruning)."""
    scorers = [METHODS[method](model, i, seed) for i in range(model.config.num_hidden_layers)]
    with model.observe_routing(lambda event: scorers[event.layer_idx].observe(event)):
        for ids in documents:
            model(input_ids=ids, use_cache=False)
    return [scorer.scores() for scorer in scorers]


def top_experts(scores: torch.Tensor, count: int) -> list[int]:
    """Sorted ids of the ``count`` highest scores (ties: the lower id first)."""
    return sorted(torch.sort(scores, descending=True, stable=True).indices[:count].tolist())


@torch.no_grad()
def select_experts(
    model,
    documents: list[torch.Tensor],
    *,
    method: str = "greedy",
    keep: float | Sequence[float] = 0.25,
    seed: int = 0,
):
    """{layer index: sorted kept routed expert ids}; the model's expert mask is left at the selection."""
    if method not in METHODS:
        raise ConversionError(f"unknown selection method {method!r}; choose from {tuple(METHODS)}")
    model.eval()
    counts = routed_counts(keep, model)
    chosen: dict[int, list[int]] = {}
    if METHODS[method].conditioned:
        for layer_idx, count in enumerate(counts):
            model.set_expert_mask(kept_expert_masks(model, chosen))
            chosen[layer_idx] = top_experts(layer_scores(model, layer_idx, documents, method, seed), count)
    else:
        model.set_expert_mask(None)
        for layer_idx, scores in enumerate(one_pass_scores(model, documents, method, seed)):
            chosen[layer_idx] = top_experts(scores, counts[layer_idx])
    model.set_expert_mask(kept_expert_masks(model, chosen))
    return chosen
