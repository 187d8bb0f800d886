"""Regression tests for the GPU path's defects 1–9 of issue 10 (each docstring names the defect it guards).

All of them failed on f03a31f. Defects 5 and 6 (saving / resuming the distributed optimizer) are guarded by
tests/cuda_free/test_gpu_path_checkpoints.py; intra-document attention (defect 10) by the THD tests.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.cuda_free.backend_runs import SEQ, build_config, train_run
from tests.helpers import run_record
from tests.parallel.harness import Layout, run_ranks

pytestmark = pytest.mark.cuda_free


def test_defect_1_backend_imports_with_megatron_core_0_19():
    """Defect 1: ``megatron_backend`` imported ``ParamGroupOverride`` etc. from where 0.19.2 does not define them."""
    backend = importlib.import_module("emo_plugin.training.megatron_backend")
    assert callable(backend.MegatronBackend)


@pytest.fixture(scope="module")
def one_rank_runs():
    """Host and GPU path on one rank, 4 micro-batches per step, from the same weights."""
    (host,) = run_ranks(train_run, 1, device="cpu", overrides={}, steps=1)
    (gpu,) = run_ranks(train_run, 1, device="cuda", overrides={}, steps=1, full_state=host["initial"])
    return host, gpu


def test_defect_2_reported_loss_is_not_divided_by_micro_batches(one_rank_runs):
    """Defect 2: the reported train and validation ``lm loss`` was the true loss ÷ micro-batches × CP (the
    schedule scales the returned loss in place and ``detach()`` shared its storage)."""
    host, gpu = one_rank_runs
    assert gpu["records"][0]["lm loss"] == pytest.approx(host["records"][0]["lm loss"], rel=1e-6)
    assert gpu["valid_loss"] == pytest.approx(host["valid_loss"], rel=1e-6)
    assert gpu["records"][0]["lm loss"] > 4.0  # ~log(128): a fresh model's loss, not a quarter of it


def test_defect_3_no_weight_decay_on_embeddings_norms_biases():
    """Defect 3: weight decay hit embeddings, norms and biases (``wd_mult=0`` only acts through Megatron's
    ``OptimizerParamScheduler``, which the backend did not create). With a zero loss (loss mask 0, no
    load-balancing or z-loss) one AdamW step is pure decoupled decay: decayed weights shrink by exactly
    (1 - lr·wd), the others must not move at all. Distributed optimizer, DP2."""
    from emo_plugin.training.param_groups import no_weight_decay

    overrides = {"emo.lb_coeff": 0.0, "emo.z_loss_coeff": 0.0, "optimizer.weight_decay": 0.5}
    results = run_ranks(train_run, 2, device="cuda", overrides=overrides, steps=1, loss_mask=0.0)
    for result in results:
        lr = result["records"][0]["learning-rate"]
        decayed = 0
        for name, before in result["initial"].items():
            after = result["final"][name]
            if no_weight_decay(name, before):
                assert torch.equal(after, before), f"{name} was decayed"
            else:
                torch.testing.assert_close(after, before * (1 - lr * 0.5), rtol=1e-6, atol=0, msg=name)
                decayed += 1
        names = list(result["initial"])
        assert decayed and any("norm" in n for n in names) and any("embedding" in n for n in names)


def inject_nan_gradient(backend, name: str):
    """Make the first backward's gradient of parameter ``name`` NaN (a fault the step must not apply)."""
    module = backend.model[0].module
    param = dict(module.named_parameters())[name]
    fired = []

    def hook(grad):
        if fired:
            return grad
        fired.append(True)
        return torch.full_like(grad, float("nan"))

    param.register_hook(hook)


def test_defect_4_nan_policy_skip_never_applies_a_nan_gradient():
    """Defect 4: without a grad scaler Megatron's optimizer does not check for inf/NaN, and the backend only
    looked at the grad norm after ``optimizer.step()``: a NaN gradient reached the weights. Now the step is
    skipped (reported non-finite) and every weight on every rank stays bit-identical."""
    results = run_ranks(
        train_run, 2, device="cuda", overrides={"nan_policy": "skip"}, steps=1,
        probe=inject_nan_gradient, probe_kwargs={"name": "decoder.layers.0.self_attention.linear_qkv.weight"},
    )
    for result in results:
        (record,) = result["records"]
        assert not record["finite"]
        assert torch.isfinite(torch.tensor(record["lm loss"]))  # the forward was fine; only a gradient broke
        for name, before in result["initial"].items():
            assert torch.equal(result["final"][name], before), name


def p2p_shapes(layout, seq: int, batch: int):
    """Megatron's pipeline p2p activation shape for the backend's ``seq_length`` vs this CP rank's tokens."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel.schedules import get_tensor_shapes

    from emo_plugin.run.transformer import build_transformer_config
    from emo_plugin.training.megatron_backend import context_parallel_share, schedule_seq_length

    cfg = build_config("cuda", {"parallel.context_parallel_size": 2, "data.seq_length": seq})
    config = build_transformer_config(cfg, run_record(cfg), "cuda")
    micro_batch = {"tokens": torch.arange(batch * seq).view(batch, seq), "routing_ids": torch.zeros(batch, seq)}
    local = context_parallel_share(dict(micro_batch))
    (shape,) = get_tensor_shapes(
        seq_length=schedule_seq_length(micro_batch, seq), micro_batch_size=batch, decoder_seq_length=None,
        config=config, tp_group=ps.get_tensor_model_parallel_group(), cp_group=ps.get_context_parallel_group(),
    )
    return {"p2p_seq": shape[0], "local_seq": local["tokens"].shape[1], "routing_seq": local["routing_ids"].shape[1],
            "tokens": local["tokens"], "dp_rank": ps.get_data_parallel_rank()}


@pytest.mark.parametrize("world_size", [2, 4], ids=["cp2", "dp2xcp2"])
def test_defect_7_pipeline_p2p_length_is_the_context_parallel_share(world_size):
    """Defect 7: ``seq_length=seq // cp`` was divided by CP again inside the schedule, so PP×CP p2p buffers
    had seq/cp² rows for activations of seq/cp tokens. Also guards the CP split itself, which called
    Megatron 0.19's ``get_batch_on_this_cp_rank`` without its required ``is_hybrid_cp`` and, without its
    ``cp_group``, split over the whole world once DP > 1 (DP2×CP2 gave each rank a quarter)."""
    results = run_ranks(p2p_shapes, world_size, Layout(cp=2), seq=SEQ, batch=2)
    for result in results:
        assert result["p2p_seq"] == result["local_seq"] == result["routing_seq"] == SEQ // 2
    for dp_rank in {r["dp_rank"] for r in results}:
        shares = [r["tokens"] for r in results if r["dp_rank"] == dp_rank]
        together = torch.cat(shares, dim=1).sort(dim=1).values
        assert torch.equal(together, torch.arange(2 * SEQ).view(2, SEQ))  # a CP group's shares partition each sequence


def initial_seed(backend):
    return torch.initial_seed()


def test_defect_8_pipeline_stages_get_megatron_lm_seeds():
    """Defect 8: every pipeline stage drew its initialisation from the same seed; Megatron-LM seeds stage p
    with seed + 100·p."""
    results = run_ranks(
        train_run, 2, device="cuda", overrides={"parallel.pipeline_model_parallel_size": 2}, steps=0,
        probe=initial_seed,
    )
    seed = build_config("cuda", {}).seed
    assert [(r["pp_rank"], r["probe"]) for r in results] == [(0, seed), (1, seed + 100)]


def test_defect_9_transformer_engine_is_detected_by_megatron_and_never_silently_dropped():
    """Defect 9: TE detection was "``import transformer_engine`` worked", and a GPU run without TE silently fell
    back to the local spec. Now: Megatron's ``HAVE_TE``; asking for the TE spec or FP8 without TE is an error
    that names the field; CPU runs never ask for TE."""
    from megatron.core.extensions import transformer_engine as megatron_te

    from emo_plugin.errors import ConfigError
    from emo_plugin.run import transformer as builders

    assert builders.HAVE_TE is megatron_te.HAVE_TE
    cfg = build_config("cuda", {"model.transformer_impl": "transformer_engine"})
    with pytest.raises(ConfigError, match=r"model\.transformer_impl='transformer_engine'.*emo_plugin\[te\]"):
        builders.use_transformer_engine(cfg, "cuda", have_te=False)
    assert builders.use_transformer_engine(cfg, "cuda", have_te=True)
    fp8 = build_config("cuda", {"model.transformer_impl": "local", "precision.fp8_recipe": "delayed"})
    with pytest.raises(ConfigError, match=r"precision\.fp8_recipe='delayed'.*Transformer Engine"):
        builders.use_transformer_engine(fp8, "cuda", have_te=False)
    assert not builders.use_transformer_engine(build_config("cpu", {}), "cpu", have_te=False)


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="TE is installed here")
def test_defect_9_gpu_run_without_transformer_engine_stops_with_the_field():
    """Defect 9, end to end: the GPU path with the default ``model.transformer_impl`` and no TE refuses to start."""
    with pytest.raises(RuntimeError, match=r"ConfigError: model\.transformer_impl='transformer_engine'"):
        run_ranks(train_run, 1, device="cuda", overrides={"model.transformer_impl": "transformer_engine"}, steps=0)
