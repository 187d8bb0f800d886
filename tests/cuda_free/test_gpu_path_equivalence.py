"""The GPU path (``MegatronBackend``) on CPU gloo ranks equals the host backend from the same initial weights.

Each case loads one set of 1-rank weights into both runs and takes two optimizer steps (warm-up, then cosine
decay; AdamW, weight decay, clipping) plus a validation pass. Tolerances:

* per-step LM loss and the validation loss: rtol 1e-6 (both sides evaluate the same weights in fp32);
* per-step grad norm: rtol 1e-5 (different reduction orders: Megatron's buckets vs per-parameter sums);
* parameters after the two steps: atol 1e-4 = lr/100 (Adam divides by sqrt(v) + eps, which magnifies
  rounding in near-zero gradient entries up to that much).

References: the host backend at the same layout where it has one (DP, EP: the load-balancing counts are
DP-global, so a DP2 run is not a 1-rank run), else the 1-rank host run (PP, VPP, TP + SP).
"""

from __future__ import annotations

import pytest
import torch

from tests.cuda_free.backend_runs import train_run
from tests.parallel.harness import run_ranks

pytestmark = pytest.mark.cuda_free

LOSS_RTOL, NORM_RTOL, PARAM_ATOL = 1e-6, 1e-5, 1e-4
STEPS = 2
FOUR_LAYERS = {"model.num_layers": 4}


@pytest.fixture(scope="module")
def weights():
    """1-rank initial weights of the 2- and 4-layer models (the host backend's own initialisation)."""
    return {
        layers: run_ranks(train_run, 1, device="cpu", overrides={"model.num_layers": layers}, steps=0)[0]["initial"]
        for layers in (2, 4)
    }


@pytest.fixture(scope="module")
def host(weights):
    """Host-backend references by (world size, overrides as a sorted tuple)."""
    cache = {}

    def get(world: int, overrides: dict):
        key = (world, tuple(sorted(overrides.items())))
        if key not in cache:
            layers = overrides.get("model.num_layers", 2)
            cache[key] = run_ranks(
                train_run, world, device="cpu", overrides=overrides, steps=STEPS, full_state=weights[layers]
            )
        return cache[key]

    return get


def gpu_path(world: int, overrides: dict, weights, **kwargs) -> list:
    layers = overrides.get("model.num_layers", 2)
    return run_ranks(
        train_run, world, device="cuda", overrides=overrides, steps=STEPS, full_state=weights[layers], **kwargs
    )


def assert_equivalent(results: list, references: list) -> None:
    for rank, result in enumerate(results):
        reference = references[rank] if len(references) == len(results) else references[0]
        for step, (got, want) in enumerate(zip(result["records"], reference["records"], strict=True), start=1):
            assert got["finite"] and want["finite"], step
            assert got["learning-rate"] == pytest.approx(want["learning-rate"], rel=1e-12), step
            assert got["lm loss"] == pytest.approx(want["lm loss"], rel=LOSS_RTOL), (rank, step, "lm loss")
            assert got["grad-norm"] == pytest.approx(want["grad-norm"], rel=NORM_RTOL), (rank, step, "grad-norm")
        assert result["valid_loss"] == pytest.approx(reference["valid_loss"], rel=LOSS_RTOL), (rank, "validation")
        compared = 0
        for name, value in result["final"].items():
            if name in reference["final"] and reference["final"][name].shape == value.shape:
                torch.testing.assert_close(value, reference["final"][name], rtol=0, atol=PARAM_ATOL, msg=name)
                compared += 1
        assert compared, f"rank {rank}: no parameter compared"


@pytest.mark.parametrize(
    "distributed_optimizer, overlap",
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["ddp", "distopt", "ddp-overlap", "distopt-overlap"],
)
def test_dp2(weights, host, distributed_optimizer, overlap):
    """DDP grad buffers / distributed optimizer, with and without overlapped grad reduce (+ param gather)."""
    overrides = {
        "optimizer.use_distributed_optimizer": distributed_optimizer,
        "optimizer.overlap_grad_reduce": overlap,
        "optimizer.overlap_param_gather": overlap and distributed_optimizer,
    }
    assert_equivalent(gpu_path(2, overrides, weights), host(2, {}))


def test_dp2_global_batch_load_balancing(weights, host):
    overrides = {"emo.lb_scope": "global_batch"}
    assert_equivalent(gpu_path(2, overrides, weights), host(2, overrides))


@pytest.mark.parametrize("dispatcher", ["alltoall", "allgather"])
def test_ep2(weights, host, dispatcher):
    overrides = {"parallel.expert_model_parallel_size": 2}
    results = gpu_path(2, overrides, weights, transformer_overrides={"moe_token_dispatcher_type": dispatcher})
    assert_equivalent(results, host(2, overrides))


def test_pp2_one_f_one_b(weights, host):
    results = gpu_path(2, {"parallel.pipeline_model_parallel_size": 2}, weights)
    assert [r["pp_rank"] for r in results] == [0, 1]
    assert_equivalent(results, host(1, {}))


def test_pp2_interleaved_vpp2(weights, host):
    overrides = {**FOUR_LAYERS, "parallel.pipeline_model_parallel_size": 2,
                 "parallel.virtual_pipeline_model_parallel_size": 2}
    assert_equivalent(gpu_path(2, overrides, weights), host(1, FOUR_LAYERS))


def test_tp2_sequence_parallel(weights, host):
    """z-loss off: Megatron's z-loss is a token mean per sequence shard, the global mean only when every shard
    holds as many valid tokens (tests/parallel/test_data_parallel.py); the load-balancing loss is global."""
    no_z_loss = {"emo.z_loss_coeff": 0.0}
    overrides = {**no_z_loss, "parallel.tensor_model_parallel_size": 2, "parallel.sequence_parallel": True}
    assert_equivalent(gpu_path(2, overrides, weights), host(1, no_z_loss))
