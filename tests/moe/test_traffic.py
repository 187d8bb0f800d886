"""The expert-parallel dispatch traffic counter (``emo_plugin/moe/traffic.py``) against a plain loop."""

import pytest
import torch

from emo_plugin.moe.traffic import dispatch_traffic


def test_traffic_counts_offrank_slots_and_destination_ranks():
    g = torch.Generator().manual_seed(0)
    experts_TK = torch.stack([torch.randperm(8, generator=g)[:3] for _ in range(50)])
    routing_map_TE = torch.zeros(50, 8, dtype=torch.bool).scatter_(1, experts_TK, True)
    ep_size, ep_rank, per_token = 4, 1, 64 * 2
    traffic = dispatch_traffic(routing_map_TE, ep_rank=ep_rank, ep_size=ep_size, bytes_per_token=per_token)
    slots = pairs = 0
    for row in experts_TK.tolist():
        ranks = [e // 2 for e in row]
        slots += sum(r != ep_rank for r in ranks)
        pairs += len({r for r in ranks if r != ep_rank})
    assert traffic["ep_offrank_share"].item() == pytest.approx(slots / (50 * 3))
    assert traffic["ep_dispatch_bytes"].item() == slots * per_token
    assert traffic["ep_dispatch_bytes_dedup"].item() == pairs * per_token
