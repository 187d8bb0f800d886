"""Test machinery for the converters: the tiny architecture, a 1-rank model, and a rank worker that saves a
dist checkpoint under any parallel layout (run through tests/parallel/harness.py)."""

from __future__ import annotations

import torch

from emo_plugin.model.record import RECORD_KEY, ModelRecord
from tests.helpers import TINY  # noqa: F401  (the converters' tests import it from here too)

SEED = 7


def random_model(arch: ModelRecord = TINY, **kwargs):
    """The 1-rank host model with every weight random (norms too), so any misplaced tensor changes logits."""
    from emo_plugin.convert.megatron_host import build_host_model

    torch.manual_seed(SEED)
    model = build_host_model(arch, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.2) + (1.0 if p.ndim == 1 else 0.0))
    return model


def save_under_layout(layout, root: str, full_state: dict) -> None:
    """Rank worker: build the model for ``layout``, load the 1-rank weights, save a dist checkpoint."""
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from tests.parallel.harness import build_gpt, emo_config, load_from_single_rank

    model = build_gpt(emo_config(layout), seq_len=16)
    load_from_single_rank(model, full_state)
    state = {"model": model.sharded_state_dict(prefix=""), RECORD_KEY: TINY.to_dict()}
    checkpoint.save(root, 3, state, HostTorchDistSaveStrategy())
