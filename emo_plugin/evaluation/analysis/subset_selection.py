"""Which routed experts a domain keeps: the bridge from the subset evaluation to `emo_plugin.evaluation.selection`.

The evaluation speaks in fractions; `emo_plugin.evaluation.selection.select_experts` takes `keep` as a fraction (< 1) of
ALL expert slots, shared included (AI2's "16 of 128"), or as a slot count. A fraction of 1.0 is passed as the
largest slot count, so it keeps every expert and the masked model IS the full model. Shared experts are always
kept. The model's expert mask is cleared afterwards: the caller decides what to mask.
"""

from __future__ import annotations

import torch

from emo_plugin.errors import AnalysisError

METHODS = ("greedy", "easy_ep", "random")


def kept_mask_by_layer(model, kept_by_layer: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """{layer: bool [R]} for `EmoForCausalLM.set_expert_mask` from {layer: kept routed-expert ids}."""
    masks = {}
    for layer_idx, kept in kept_by_layer.items():
        mask = torch.zeros(model.model.layers[layer_idx].mlp.n_routed, dtype=torch.bool)
        mask[torch.as_tensor(kept, dtype=torch.long)] = True
        masks[layer_idx] = mask
    return masks


def select_kept_experts(
    model, calibration_documents: list[list[int]], fraction: float, method: str = "greedy", seed: int = 0
) -> dict[int, torch.Tensor]:
    """{layer: sorted LongTensor of kept routed-expert ids} chosen from the calibration documents."""
    from emo_plugin.errors import ConversionError
    from emo_plugin.evaluation.selection import select_experts

    if not 0.0 < fraction <= 1.0:
        raise AnalysisError(f"expert fractions must lie in (0, 1], got {fraction}")
    if method not in METHODS:
        raise AnalysisError(f"--method must be one of {METHODS}, got {method!r}")
    keep = fraction if fraction < 1.0 else float(max(len(layer.mlp.experts) for layer in model.model.layers))
    device = model.model.embed_tokens.weight.device
    documents = [torch.tensor([ids], dtype=torch.long, device=device) for ids in calibration_documents]
    try:
        chosen = select_experts(model, documents, method=method, keep=keep, seed=seed)
    except ConversionError as error:
        raise AnalysisError(f"expert fraction {fraction}: {error}") from None
    finally:
        model.set_expert_mask(None)
    return {layer: torch.as_tensor(ids, dtype=torch.long) for layer, ids in chosen.items()}
