"""``emo-pretrain --parallel.device=cuda`` end to end on CPU gloo ranks: save → resume with the distributed
optimizer (bit-exact at the same DP size, same weights at another), the NaN policy's stop, validation.

The DP2 runs are the README's command (``torchrun --nproc-per-node 2 ... --parallel.device=cuda``) through
tests/cuda_free/cuda_free_cli.py; the 1-rank runs call the same CLI parsing and ``Trainer`` inside a forked
rank (tests/cuda_free/trainer_runs.py), which saves the ~7 s import.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from emo_plugin import checkpoint
from tests.cuda_free.trainer_runs import cli_run, cli_script, gpu_args
from tests.parallel.harness import run_ranks
from tests.training.conftest import PYTHON, REPO, env, free_port, read_metrics

pytestmark = pytest.mark.cuda_free


def _torchrun(args: list[str]) -> None:
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           str(cli_script()), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def dp2_run(corpus_prefix, tmp_path_factory):
    """4 steps at DP2 with the distributed optimizer (fp32), validation every 2 steps, checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("gpu_dp2")
    _torchrun(gpu_args(corpus_prefix, out, schedule__train_iters=4, eval__interval=2, eval__iters=1,
                       checkpoint__save_interval=2))
    return out


@pytest.fixture(scope="module")
def dp2_resumed(dp2_run, corpus_prefix, tmp_path_factory):
    """The same run resumed at DP2 from its iteration-2 checkpoint (torchrun again)."""
    out = tmp_path_factory.mktemp("gpu_dp2_resumed")
    resume = _resume_copy(dp2_run, 2, out)
    _torchrun(gpu_args(corpus_prefix, out, schedule__train_iters=4, eval__interval=2, eval__iters=1) + resume)
    return read_metrics(dp2_run / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")


def _resume_copy(run: Path, iteration: int, out: Path) -> list[str]:
    """A copy of ``run``'s checkpoint at ``iteration`` and the flags that resume from it without saving again
    (Megatron's torch_dist writer starts helper processes, which the harness's daemonic ranks may not)."""
    (out / "ckpt").mkdir(parents=True)
    source = checkpoint.iteration_dir(run / "ckpt", iteration)
    target = checkpoint.iteration_dir(out / "ckpt", iteration)
    shutil.copytree(source, target)
    (out / "ckpt" / checkpoint.LATEST).write_text(f"{iteration}\n")
    return [f"--checkpoint.load={out / 'ckpt'}", "--checkpoint.save=none"]


def test_dp2_run_reports_training_and_validation(dp2_run):
    metrics = read_metrics(dp2_run / "metrics.jsonl")
    assert sorted(k for k in metrics if isinstance(k, int)) == [1, 2, 3, 4]
    assert {("valid", 2), ("valid", 4)} <= set(metrics)
    assert metrics[1]["lm loss"] > 7.0  # ~log(vocab) for a fresh model: the reported loss is not pre-scaled
    assert checkpoint.latest_iteration(dp2_run / "ckpt") == 4


def test_resume_with_distributed_optimizer(dp2_resumed):
    """Defects 5 and 6: saving the distributed optimizer needs Megatron-LM's sharding metadata (else the refused
    ``fully_sharded_model_space`` format), and an fp32 resume must load under ``no_grad``. The first step after
    resuming at iteration 2 sees the uninterrupted run's weights, data, gradients and schedule, bit for bit."""
    straight, resumed = dp2_resumed
    assert sorted(k for k in resumed if isinstance(k, int)) == [3, 4]
    for name in ("lm loss", "grad-norm", "learning-rate"):
        assert resumed[3][name] == straight[3][name], name


def test_resume_with_distributed_optimizer_is_bit_exact(dp2_resumed):
    """Steps 3-4 and the validation at 4 after resuming at iteration 2 equal the uninterrupted run bit for bit
    (guards the restored Adam step count: a wrong bias correction changes the first update after the resume)."""
    straight, resumed = dp2_resumed
    for key in (3, 4):
        for name in ("lm loss", "grad-norm", "learning-rate"):
            assert resumed[key][name] == straight[key][name], (key, name)
    assert resumed[("valid", 4)]["lm loss validation"] == straight[("valid", 4)]["lm loss validation"]


def test_resume_at_another_data_parallel_size(dp2_run, corpus_prefix, tmp_path):
    """The DP2 distributed-optimizer checkpoint continues on 1 rank (same global batch): step 3 sees the same
    weights and data, so the same loss (rtol 1e-6) and learning rate; the grad norm differs only through the
    load-balancing counts, which are DP-global (within 5%)."""
    resume = _resume_copy(dp2_run, 2, tmp_path)
    args = gpu_args(corpus_prefix, tmp_path, schedule__train_iters=4) + resume  # same length: same data order
    assert [r["returncode"] for r in run_ranks(cli_run, 1, args=args, timeout=240)] == [0]
    a, b = read_metrics(dp2_run / "metrics.jsonl")[3], read_metrics(tmp_path / "metrics.jsonl")[3]
    assert b["lm loss"] == pytest.approx(a["lm loss"], rel=1e-6)
    assert b["learning-rate"] == a["learning-rate"]
    assert b["grad-norm"] == pytest.approx(a["grad-norm"], rel=0.05)


def test_nan_policy_stop_stops(corpus_prefix, tmp_path):
    """nan_policy=stop on the GPU path: lr 1e30 makes step 2 non-finite; the run stops there (exit 3)."""
    args = gpu_args(corpus_prefix, tmp_path, optimizer__lr="1e30", schedule__lr_warmup_iters=0,
                    schedule__train_iters=3) + ["--checkpoint.save=none"]
    (result,) = run_ranks(cli_run, 1, args=args, timeout=240)
    assert result["returncode"] == 3
    assert "iteration 2: non-finite training step" in result["error"]
    assert sorted(k for k in read_metrics(tmp_path / "metrics.jsonl") if isinstance(k, int)) == [1]


def test_anneal_on_the_gpu_path_ignores_the_stored_scheduler(dp2_run, corpus_prefix, tmp_path):
    """A linear anneal from the DP2 checkpoint at iteration 4 on 1 rank: Megatron's checkpoint holds the cosine
    scheduler (lr 3e-3 → 3e-4 over 8 steps), yet steps 5-7 run at the checkpoint's lr, half of it, and 0; the
    validation reports the plain top-k and the pooled loss."""
    resume = _resume_copy(dp2_run, 4, tmp_path)
    args = gpu_args(corpus_prefix, tmp_path, schedule__anneal_iters=3, schedule__train_iters=7, eval__iters=1,
                    eval__interval=0) + resume
    assert [r["returncode"] for r in run_ranks(cli_run, 1, args=args, timeout=240)] == [0]
    lr4 = 3e-4 + (3e-3 - 3e-4) * 0.5 * (1 + math.cos(math.pi * (4 - 1) / (8 - 1)))  # base_args' cosine at 4
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    assert [metrics[i]["learning-rate"] for i in (5, 6, 7)] == pytest.approx([lr4, lr4 / 2, 0.0])
    assert {"lm loss validation", "lm loss validation pooled"} <= metrics[("valid", 7)].keys()
