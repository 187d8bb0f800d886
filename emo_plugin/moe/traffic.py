"""Expert-parallel dispatch traffic: how many routed (token, expert) choices leave their rank, and how many bytes.

Under expert parallelism expert slot ``e`` lives on EP rank ``e // (E / ep)`` (E expert slots, inert ones
included). Megatron's all-to-all dispatcher sends one copy of a token per chosen expert on another rank
(``ep_offrank_share`` of the routed choices; ``ep_dispatch_bytes`` at the run's hidden size and activation
dtype); deduplicating dispatchers (DeepEP, Megatron's ``flex``) send a token once per destination rank
(``ep_dispatch_bytes_dedup``). Both count the dispatch of one forward on this rank; the combine returns the same
amount, and the backward repeats both. Padding tokens are counted: they are dispatched like any other token.
Computed on device from the routing map (no host synchronisation) and recorded, like the EMO statistics,
through Megatron's MoE metrics tracker (``moe/<name>_layer_<i>``). Shape suffixes: T tokens, E expert slots,
P expert-parallel ranks.
"""

from __future__ import annotations

import torch

EP_METRIC_NAMES = ("ep_offrank_share", "ep_dispatch_bytes", "ep_dispatch_bytes_dedup")


def dispatch_traffic(
    routing_map_TE: torch.Tensor, *, ep_rank: int, ep_size: int, bytes_per_token: int
) -> dict[str, torch.Tensor]:
    """This rank's off-rank share of routed choices, and the bytes its dispatch sends with and without dedup."""
    with torch.no_grad():
        num_tokens, num_expert_slots = routing_map_TE.shape
        to_rank_TP = routing_map_TE.view(num_tokens, ep_size, num_expert_slots // ep_size)
        choices_P = to_rank_TP.sum(dim=(0, 2), dtype=torch.float32)
        pairs_P = to_rank_TP.any(dim=-1).sum(dim=0, dtype=torch.float32)
        offrank_choices = choices_P.sum() - choices_P[ep_rank]
        offrank_pairs = pairs_P.sum() - pairs_P[ep_rank]
    return {
        "ep_offrank_share": offrank_choices / choices_P.sum().clamp_min(1),
        "ep_dispatch_bytes": offrank_choices * bytes_per_token,
        "ep_dispatch_bytes_dedup": offrank_pairs * bytes_per_token,
    }
