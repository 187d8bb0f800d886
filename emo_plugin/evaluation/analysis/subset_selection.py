"""Which routed experts a domain keeps: the bridge from the subset evaluation to `emo_plugin.evaluation.selection`,
which owns the selection (methods, layer-wise scoring, keep rule, masks).

The evaluation speaks in fractions of ALL Hugging Face experts, shared included (AI2's "16 of 128"), which is how
`select_experts` reads a `keep` <= 1: 1.0 keeps every expert, so the masked model IS the full model. A per-layer
budget (a list, one keep value per layer) is passed through as it is. Shared experts are always kept. The
model's expert mask is cleared afterwards: the caller decides what to mask.
"""

from __future__ import annotations

import torch

from emo_plugin.errors import AnalysisError


def select_kept_experts(
    model, calibration_documents: list[list[int]], keep: float | list[float], method: str = "greedy", seed: int = 0
) -> dict[int, list[int]]:
    """{layer: sorted kept routed-expert ids} chosen from the calibration documents; `keep` is a fraction of the
    slots of every layer or a per-layer budget."""
    from emo_plugin.errors import ConversionError
    from emo_plugin.evaluation.selection import select_experts

    uniform = isinstance(keep, (int, float))
    if uniform and not 0.0 < keep <= 1.0:
        raise AnalysisError(f"expert fractions must lie in (0, 1], got {keep}")
    documents = [torch.tensor([ids], dtype=torch.long, device=model.device) for ids in calibration_documents]
    try:
        return select_experts(model, documents, method=method, keep=keep, seed=seed)
    except ConversionError as error:
        subset = f"expert fraction {keep}" if uniform else f"layer budget {keep}"
        raise AnalysisError(f"{subset}: {error}") from None
    finally:
        model.set_expert_mask(None)
