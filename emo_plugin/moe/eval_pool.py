"""Evaluate an EMO model with another evaluation pool: the switch between pooled and plain top-k validation.

In ``eval()`` mode every document routes inside a pool of ``emo.pool_eval`` experts. The paper's full-model
metric, and the exported Hugging Face model's default routing, is plain top-k over all routed experts; a pool
of at least the R routed experts is exactly that (``routing.pool_masked_logits`` then masks nothing but the
inert slots). This context sets the pool of every EMO router in the given models and restores it afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch

from emo_plugin.moe.router import EmoRouter


def _routers(models: torch.nn.Module | Iterable[torch.nn.Module]) -> list[EmoRouter]:
    models = [models] if isinstance(models, torch.nn.Module) else list(models)
    return [m for model in models for m in model.modules() if isinstance(m, EmoRouter)]


@contextlib.contextmanager
def evaluation_pool(models: torch.nn.Module | Iterable[torch.nn.Module], pool_size: int | None) -> Iterator[None]:
    """Route evaluation with pools of ``pool_size`` experts; ``None``: all routed experts (plain top-k)."""
    configs = {id(r.config.emo): (r.config.emo, r.config.num_selectable_experts) for r in _routers(models)}
    saved = {key: emo.pool_eval for key, (emo, _) in configs.items()}
    try:
        for emo, selectable in configs.values():
            emo.pool_eval = selectable if pool_size is None else pool_size
        yield
    finally:
        for key, (emo, _) in configs.items():
            emo.pool_eval = saved[key]
