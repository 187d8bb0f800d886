"""EMO through Megatron-LM's own loop (``emo-pretrain-megatron``) on CPU gloo ranks, against ``emo-pretrain``.

Both loops start from one ``emo-import-hf`` checkpoint (Megatron-LM resumes it with ``--load``, emo-pretrain
loads its weights) and train the same data with the same seed; tests/cuda_free/megatron_lm_runs.py says which
conventions the two runs share and why. At DP2, TP2+SP, EP2 (alltoall) and PP2 every step's loss (rtol 1e-6),
gradient norm (rtol 1e-5) and EMO routing statistic in TensorBoard (rtol 1e-5) agree; at DP2 also the weights
after 4 steps (atol 1e-5) and the logits of both exports (atol 1e-4); a DP2 checkpoint resumed at DP1 continues
the same steps. Megatron-LM's loop runs unmodified through tests/cuda_free/megatron_lm_cli.py.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from emo_plugin import checkpoint
from emo_plugin.moe.traffic import EP_METRIC_NAMES
from tests.cuda_free.megatron_lm_runs import emo_pretrain_args, megatron_lm_args, run_megatron_lm, scalars
from tests.cuda_free.trainer_runs import cli_run, cli_script
from tests.parallel.harness import Layout, run_ranks
from tests.training.conftest import PYTHON, REPO, env, free_port

pytestmark = pytest.mark.cuda_free

EMO_STATISTICS = ("emo_pool_size", "emo_token_entropy", "emo_doc_entropy", "emo_fraction_experts_used",
                  "emo_load_imbalance", "load_balancing_loss")
LAYOUTS = {
    # name: (Megatron-LM flags, emo-pretrain flags, harness layout)
    "tp2_sp": (["--tensor-model-parallel-size", "2", "--sequence-parallel", "--use-distributed-optimizer"],
               ["--parallel.tensor_model_parallel_size=2", "--parallel.sequence_parallel=true"], Layout(tp=2)),
    "ep2_alltoall": (["--expert-model-parallel-size", "2", "--use-distributed-optimizer"],
                     ["--parallel.expert_model_parallel_size=2"], Layout(ep=2)),
    "pp2": (["--pipeline-model-parallel-size", "2", "--use-distributed-optimizer"],
            ["--parallel.pipeline_model_parallel_size=2"], Layout(pp=2)),
}


@pytest.fixture(scope="module")
def imported_start(seed_run, tmp_path_factory):
    """``emo-import-hf`` of the exported seed run: where both loops start."""
    from emo_plugin.convert.export import export_to_hf
    from emo_plugin.convert.import_hf import import_from_hf

    root = tmp_path_factory.mktemp("mlm_start")
    export_to_hf(seed_run / "ckpt", root / "hf", dtype="fp32", progress=False)
    import_from_hf(root / "hf", root / "ckpt", progress=False)
    return root / "ckpt"


def _megatron_lm_start(start) -> list[str]:
    return ["--load", str(start), "--no-load-optim", "--no-load-rng"]


def _emo_start(start) -> list[str]:
    return [f"--checkpoint.load={start}", "--checkpoint.finetune=true"]


def _torchrun_emo_pretrain(args: list[str]) -> None:
    import subprocess

    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           str(cli_script()), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def assert_same_steps(megatron_lm: dict, emo: dict, steps: range, statistics=EMO_STATISTICS) -> None:
    for step in steps:
        assert math.isclose(megatron_lm["lm loss"][step], emo["lm loss"][step], rel_tol=1e-6), step
        assert math.isclose(megatron_lm["grad-norm"][step], emo["grad-norm"][step], rel_tol=1e-5), step
        for name in statistics:
            assert math.isclose(megatron_lm[name][step], emo[name][step], rel_tol=1e-5, abs_tol=1e-7), (name, step)


@pytest.fixture(scope="module")
def dp2_runs(corpus_prefix, imported_start, tmp_path_factory):
    """4 steps at DP2 in each loop (Megatron's non-distributed optimizer), checkpoints at 2 and 4 (Megatron-LM)."""
    mlm, emo = tmp_path_factory.mktemp("mlm_dp2"), tmp_path_factory.mktemp("emo_dp2")
    run_megatron_lm(megatron_lm_args(corpus_prefix, mlm, *_megatron_lm_start(imported_start), "--save-interval",
                                     "2", steps=4), nproc=2)
    _torchrun_emo_pretrain(emo_pretrain_args(corpus_prefix, emo, *_emo_start(imported_start),
                                             "--optimizer.use_distributed_optimizer=false", steps=4))
    return mlm, emo


def test_dp2_trains_like_emo_pretrain(dp2_runs):
    mlm, emo = dp2_runs
    assert_same_steps(scalars(mlm / "tb"), scalars(emo / "tb"), range(1, 5))


def test_dp2_weights_after_four_steps_match_emo_pretrain(dp2_runs):
    from emo_plugin.convert.dist_reader import DistCheckpointReader

    mlm, emo = (DistCheckpointReader(checkpoint.iteration_dir(run / "ckpt", 4)) for run in dp2_runs)
    keys = [key for key in emo.tensors if not key.startswith("optimizer") and "_extra_state" not in key]
    assert keys and set(keys) <= set(mlm.tensors)
    for key in keys:
        torch.testing.assert_close(mlm.read(key), emo.read(key), rtol=0, atol=1e-5, msg=key)


def test_exports_of_both_loops_compute_the_same_logits(dp2_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from emo_plugin.convert.export import export_to_hf

    logits = []
    for name, run in zip(("mlm", "emo"), dp2_runs):
        export_to_hf(run / "ckpt", tmp_path / name, dtype="fp32", progress=False)
        model = AutoModelForCausalLM.from_pretrained(tmp_path / name, trust_remote_code=True).eval()
        with torch.no_grad():
            logits.append(model(torch.arange(3, 40).view(1, -1)).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-4)


def test_a_dp2_checkpoint_resumes_at_dp1(dp2_runs, corpus_prefix, tmp_path):
    """Steps 3 and 4 resumed on one rank (one micro-batch of 8, the DP2 step's routing statistics) from the DP2
    run's iteration-2 checkpoint, Megatron-LM's --load (model, optimizer, scheduler; rng is per rank)."""
    mlm, _ = dp2_runs
    resume = tmp_path / "resume"
    shutil.copytree(checkpoint.iteration_dir(mlm / "ckpt", 2), checkpoint.iteration_dir(resume, 2))
    (resume / checkpoint.LATEST).write_text("2\n")
    run_megatron_lm(megatron_lm_args(corpus_prefix, tmp_path, "--load", str(resume), "--no-load-rng",
                                     "--micro-batch-size", "8", steps=4))
    resumed, continuous = scalars(tmp_path / "tb"), scalars(mlm / "tb")
    assert sorted(resumed["lm loss"]) == [3, 4]
    for step in (3, 4):
        assert math.isclose(resumed["lm loss"][step], continuous["lm loss"][step], rel_tol=1e-6), step
        assert math.isclose(resumed["grad-norm"][step], continuous["grad-norm"][step], rel_tol=1e-5), step


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_model_parallel_layouts_train_like_emo_pretrain(layout, corpus_prefix, imported_start, tmp_path):
    megatron_flags, emo_flags, harness_layout = LAYOUTS[layout]
    mlm, emo = tmp_path / "mlm", tmp_path / "emo"
    run_megatron_lm(megatron_lm_args(corpus_prefix, mlm, *_megatron_lm_start(imported_start), *megatron_flags),
                    nproc=2)
    args = emo_pretrain_args(corpus_prefix, emo, *_emo_start(imported_start), *emo_flags, "--checkpoint.save=none")
    assert [r["returncode"] for r in run_ranks(cli_run, 2, harness_layout, args=args, timeout=240)] == [0, 0]
    # under EP both loops also log the dispatch-traffic counters (moe/traffic.py)
    statistics = EMO_STATISTICS + (EP_METRIC_NAMES if harness_layout.ep > 1 else ())
    assert_same_steps(scalars(mlm / "tb"), scalars(emo / "tb"), range(1, 3), statistics)
    if layout == "pp2":  # a pipeline-parallel Megatron-LM checkpoint exports from its stored args alone
        from emo_plugin.convert.export import export_to_hf

        summary = export_to_hf(mlm / "ckpt", tmp_path / "hf", dtype="fp32", progress=False)
        assert summary["parameters"] > 0
