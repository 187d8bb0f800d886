"""Capability exclusion: drop the experts one domain uses most, and see that domain's loss rise alone.

Per layer, each domain's mean router probability of every routed expert over its calibration documents
(the unpruned model, the ``greedy`` score of docs/method.md §10) ranks the experts; the target domain loses
its top ``drop`` experts. With ``protect_ratio``, an expert is spared when some other domain's mean
probability of it is at least ``protect_ratio`` times the target's (it serves them too), and the next one in
the target's ranking is dropped instead. Shared experts are never dropped. If experts are modular by domain, the
target's held-out loss rises while the other domains' barely move.
"""

from __future__ import annotations

import numpy as np

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.batching import document_batches
from emo_plugin.evaluation.analysis.routing_recorder import record_document_routing


def mean_router_probabilities(model, documents: list[list[int]], batch_size: int, pad_id: int, device) -> list:
    """[layer] → [R] mean over all tokens of the documents of the router softmax (the model's current mask)."""
    routing = record_document_routing(model, documents, document_batches(documents, batch_size, pad_id, device))
    tokens = max(int(routing.num_tokens.sum()), 1)
    return [prob_sum_NR.sum(axis=0) / tokens for prob_sum_NR in routing.prob_sum]


def experts_to_drop(
    probabilities: dict[str, list[np.ndarray]],
    target: str,
    drop: int,
    protect_ratio: float | None = None,
) -> dict[int, list[int]]:
    """{layer: sorted dropped routed-expert ids} of the target domain; `probabilities` from
    `mean_router_probabilities` per domain."""
    if target not in probabilities:
        raise AnalysisError(f"--domain {target!r}: no such domain (have {sorted(probabilities)})")
    others = [name for name in probabilities if name != target]
    dropped = {}
    for layer, target_R in enumerate(probabilities[target]):
        order = np.argsort(-target_R, kind="stable")
        if protect_ratio is not None and others:
            most_by_others_R = np.max([probabilities[name][layer] for name in others], axis=0)
            order = [e for e in order if most_by_others_R[e] < protect_ratio * target_R[e]]
        if len(order) < drop:
            raise AnalysisError(f"layer {layer}: only {len(order)} experts can be dropped (--protect-ratio spares "
                                f"the rest), fewer than --drop-per-layer {drop}")
        dropped[layer] = sorted(int(e) for e in order[:drop])
    return dropped
