"""The planner's memory for the GPU backend against ``MegatronBackend`` itself: weights, gradient buffers,
optimizer state and the activations of its Megatron local layers (``model.transformer_impl=local``).

The backend runs unmodified on CPU gloo ranks (``tests/cuda_free``); the probe in ``workers.py`` measures its
parameters, DDP's gradient buffers (fp32: ``grad_reduce_in_fp32``) and the optimizer's fp32 main shards and Adam
moments. Tolerance ``REL``: Megatron pads each gradient bucket, and the local layers keep the norm weights in fp32
under bf16 (the planner counts bf16, as Transformer Engine keeps them); both are well under 0.2 % here.
Activations: bytes autograd saves during one micro-batch's forward, within ``ACTIVATION_REL`` (measured: the
planner is 1 % under to 5 % over; it assumes balanced expert load, the EP ranks here are not quite balanced).
The Transformer Engine profile cannot run without a GPU and is not measured here.
"""

from __future__ import annotations

import pytest

from emo_plugin.planning.plan import make_plan
from tests.cuda_free.backend_runs import VOCAB, build_config, train_run
from tests.helpers import planning_run
from tests.parallel.harness import Layout, run_ranks
from tests.planning.workers import megatron_activation_bytes, megatron_state_bytes

pytestmark = pytest.mark.cuda_free
REL = 0.002
ACTIVATION_REL = 0.06


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
    states = make_plan(planning_run(cfg, 2)).stages[0].states
    for rank in measured:
        got = rank["probe"]
        assert got["parameters"] == pytest.approx(states.parameters, rel=REL)
        assert got["gradients"] == pytest.approx(states.gradients, rel=REL)
        assert got["optimizer"] == pytest.approx(states.optimizer, rel=REL)


@pytest.mark.parametrize(
    "layout, world_size, overrides",
    [
        (Layout(), 1, {}),
        (Layout(), 1, {"precision.dtype": "bf16"}),
        (Layout(tp=2), 2, {"parallel.tensor_model_parallel_size": 2, "parallel.sequence_parallel": True,
                           "parallel.expert_tensor_parallel_size": 2}),
        (Layout(ep=2), 2, {"parallel.expert_model_parallel_size": 2}),
    ],
    ids=["fp32", "bf16", "tp2_sp", "ep2"],
)
def test_megatron_local_layers_activations(layout, world_size, overrides):
    measured = run_ranks(train_run, world_size, layout, device="cuda", overrides=overrides, steps=0,
                         probe=megatron_activation_bytes, probe_kwargs={"micro_batch_size": 2})
    cfg = build_config("cuda", {**overrides, "model.vocab_size": VOCAB, "batch.micro_batch_size": 2})
    planned = make_plan(planning_run(cfg, world_size)).stages[0].activations.per_micro_batch
    for rank in measured:
        assert planned == pytest.approx(rank["probe"], rel=ACTIVATION_REL)
