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
from emo_plugin.evaluation.selection.scoring import LayerScorer, random_scores

METHODS = ("greedy", "easy_ep", "random")


class _StopForward(Exception):
    pass


def _raise_stop(*_):
    raise _StopForward


def routed_to_keep(keep: float, block) -> int:
    """Kept routed experts of a layer from ``keep``: a fraction (<= 1) or a whole count (> 1), both of ALL expert
    slots (shared included, as AI2 counts "16 of 128"; rule in ``keep.py``); shared experts are among the kept."""
    slots = len(block.experts)
    shared = slots - block.n_routed
    kept = kept_slots(keep, slots)
    routed = min(kept - shared, block.n_routed)
    if routed < block.routed_per_token:
        raise ConversionError(
            f"--keep {keep:g} leaves {kept} of {slots} slots = {routed} routed experts, fewer than the "
            f"{block.routed_per_token} each token needs (plus {shared} shared)"
        )
    return routed


@torch.no_grad()
def select_experts(model, documents: list[torch.Tensor], *, method: str = "greedy", keep: float = 0.25, seed: int = 0):
    """{layer index: sorted kept routed expert ids}; the model's expert mask is left at the selection."""
    if method not in METHODS:
        raise ConversionError(f"unknown selection method {method!r}; choose from {METHODS}")
    model.eval()
    layers = model.model.layers
    kept: dict[int, torch.Tensor] = {}
    chosen: dict[int, list[int]] = {}
    for layer_idx, layer in enumerate(layers):
        block = layer.mlp
        count = routed_to_keep(keep, block)
        model.set_expert_mask(kept)
        if method == "random":
            scores = random_scores(block.n_routed, seed, layer_idx)
        else:
            scorer = LayerScorer(block, method)
            hooks = [block.register_forward_hook(scorer), block.register_forward_hook(_raise_stop)]
            try:
                for ids in documents:
                    try:
                        model(input_ids=ids, use_cache=False)
                    except _StopForward:
                        pass
            finally:
                for hook in hooks:
                    hook.remove()
            scores = scorer.scores()
        order = torch.sort(scores, descending=True, stable=True).indices[:count]
        chosen[layer_idx] = sorted(order.tolist())
        mask = torch.zeros(block.n_routed, dtype=torch.bool)
        mask[order] = True
        kept[layer_idx] = mask
    model.set_expert_mask(kept)
    return chosen
