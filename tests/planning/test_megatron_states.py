"""The planner's weights, gradient buffers and optimizer state for the GPU backend against ``MegatronBackend``.

The backend runs unmodified on CPU gloo ranks (``tests/cuda_free``); the probe in ``workers.py`` measures its
parameters, DDP's gradient buffers (fp32: ``grad_reduce_in_fp32``) and the optimizer's fp32 main shards and Adam
moments. Tolerance ``REL``: Megatron pads each gradient bucket, and the local layers keep the norm weights in fp32
under bf16 (the planner counts bf16, as Transformer Engine keeps them); both are well under 0.2 % here.
"""

from __future__ import annotations

import pytest

from emo_plugin.planning.plan import make_plan
from tests.cuda_free.backend_runs import VOCAB, build_config, train_run
from tests.parallel.harness import Layout, run_ranks
from tests.planning.workers import megatron_state_bytes

pytestmark = pytest.mark.cuda_free
REL = 0.002


@pytest.mark.parametrize(
    "layout, overrides",
    [
        (Layout(), {}),  # DP 2, fp32 parameters: the distributed optimizer updates them in place (8 B/param / DP)
        (Layout(ep=2), {"parallel.expert_model_parallel_size": 2}),  # dense over DP 2, experts over expert-DP 1
        (Layout(), {"precision.dtype": "bf16"}),  # fp32 main shards + moments: 12 B/param / DP
        (Layout(), {"precision.dtype": "bf16", "optimizer.use_distributed_optimizer": False}),  # unsharded
    ],
    ids=["dp2_fp32", "ep2_fp32", "dp2_bf16", "dp2_bf16_no_distopt"],
)
def test_megatron_backend_states(layout, overrides):
    measured = run_ranks(train_run, 2, layout, device="cuda", overrides=overrides, steps=0,
                         probe=megatron_state_bytes)
    cfg = build_config("cuda", {**overrides, "model.vocab_size": VOCAB})
    states = make_plan(cfg, world_size=2).stages[0].states
    for rank in measured:
        got = rank["probe"]
        assert got["parameters"] == pytest.approx(states.parameters, rel=REL)
        assert got["gradients"] == pytest.approx(states.gradients, rel=REL)
        assert got["optimizer"] == pytest.approx(states.optimizer, rel=REL)
