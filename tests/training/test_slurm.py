"""examples/slurm/pretrain.sbatch on a real two-node Slurm cluster (tests/training/slurm_cluster.py).

* Two nodes, one CPU rank each, rendezvous on the first node: the same losses, bit for bit, as torchrun with
  two processes on one machine (same config and seed).
* Preemption: a job signalled mid-run (SIGUSR1, what ``--signal=USR1@180`` sends before the time limit) saves,
  requeues itself and, left to finish, ends with the losses and weights of an uninterrupted run; every iteration
  is trained exactly once across the two attempts.
* An error exit (bad config) is not requeued: the job ends FAILED with the trainer's exit code.
* ``EMO_TRAINER=megatron_lm`` (Megatron-LM's own loop, under the CUDA-free harness): a job signalled mid-run saves
  through Megatron-LM's ``--exit-signal-handler``, exits 75, requeues, resumes with ``--load`` and ends with the
  TensorBoard losses, gradient norms and EMO statistics of an uninterrupted torchrun run.

Slurm and munge are installed by scripts/install_slurm.sh when missing; a machine where that fails fails here.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from emo_plugin import checkpoint
from tests.cuda_free.megatron_lm_runs import megatron_lm_args, run_megatron_lm, scalars
from tests.training.conftest import PYTHON, REPO, base_args, env, free_port, read_metrics, run_cli
from tests.training.slurm_cluster import NODES, SlurmCluster, ensure_installed

ITERS = 24  # ~0.2 s a step: the requeue test's signal lands with ~20 steps to spare
SCRIPT = REPO / "examples/slurm/pretrain.sbatch"
COMPARED = ("lm loss", "grad-norm", "learning-rate")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    ensure_installed()  # raises (test error, not skip) when Slurm cannot be installed
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def reference(corpus_prefix, tmp_path_factory) -> Path:
    """The uninterrupted run both tests compare with: torchrun, 2 processes on this machine."""
    out = tmp_path_factory.mktemp("torchrun")
    run_cli(base_args(corpus_prefix, out, schedule__train_iters=ITERS), nproc=2)
    return out


def _sbatch(slurm: SlurmCluster, log_dir: Path, options: list[str], args: list[str], **script_env: str) -> str:
    job_env = {**env(), "SLURM_CONF": str(slurm.conf), "PYTHON": PYTHON, "EMO_REPO": str(REPO),
               "MASTER_PORT": str(free_port()), **script_env}
    submit = subprocess.run(["sbatch", "--parsable", f"--output={log_dir}/job-%j.out", *options, str(SCRIPT), *args],
                            env=job_env, capture_output=True, text=True, check=True)
    return submit.stdout.strip().split(";")[0]


def _assert_same_steps(out: Path, reference: Path) -> None:
    got, ref = read_metrics(out / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    for iteration in range(1, ITERS + 1):
        for name in COMPARED:
            assert got[iteration][name] == ref[iteration][name], (iteration, name)


def _tensors(folder: Path, scratch: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a torch_dist checkpoint (weights, optimizer moments), read without a process group."""
    dcp_to_torch_save(folder, scratch)
    flat = torch.load(scratch, weights_only=False)
    return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}


def test_two_nodes_train_like_torchrun_on_one_machine(slurm, reference, corpus_prefix, tmp_path):
    out = tmp_path / "run"
    job = _sbatch(slurm, tmp_path, ["--nodes=2", "--ntasks-per-node=1"],
                  base_args(corpus_prefix, out, schedule__train_iters=ITERS))
    state = slurm.wait(job, timeout=170)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert slurm.job(job)["Restarts"] == "0" and f"job {job} attempt 1: run finished" in log  # no requeue
    assert f"job {job} attempt 1: 2 tasks on 2 node(s) (emo-node[1-2]), rendezvous on emo-node1" in log, log[-4000:]
    for node in NODES:  # each node's slurmd started one task of the training step
        assert f"launch task StepId={job}.0 " in (slurm.root / "log" / f"slurmd-{node}.log").read_text(), node
    assert checkpoint.latest_iteration(out / "ckpt") == ITERS
    assert sorted(k for k in read_metrics(out / "metrics.jsonl") if isinstance(k, int)) == list(range(1, ITERS + 1))
    _assert_same_steps(out, reference)


def _wait_for_steps(path: Path, steps: int, slurm: SlurmCluster, job: str, timeout: float,
                    step_line: str = r"(?m)^\{") -> None:
    """Until ``path`` holds ``steps`` matches of ``step_line`` (default: metrics.jsonl records)."""
    deadline, next_state_check = time.time() + timeout, 0.0
    while time.time() < deadline:
        if path.exists() and len(re.findall(step_line, path.read_text())) >= steps:
            return
        if time.time() > next_state_check:  # scontrol is slow next to a file read: once a second
            if slurm.job(job).get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING"):
                raise AssertionError(f"job {job} ended before step {steps}: {slurm.job(job)}")
            next_state_check = time.time() + 1
        time.sleep(0.05)
    raise AssertionError(f"job {job}: fewer than {steps} steps in {path} after {timeout} s")


def _preempt_and_finish(slurm: SlurmCluster, job: str, log_path: Path, timeout: float) -> tuple[str, str]:
    """SIGUSR1 to every rank (not the batch shell, as --signal does); the job must save, requeue itself once and
    complete. Returns the log of each attempt."""
    slurm.run("scancel", "--signal=USR1", job, check=True)
    state = slurm.wait(job, timeout=timeout)
    log = log_path.read_text()
    assert state == "COMPLETED", log[-4000:]
    assert slurm.job(job)["Restarts"] == "1", log[-4000:]
    first, second = log.split(f"emo-pretrain: job {job} attempt 2: ", 1)
    assert "checkpoint saved, run not finished: requeueing" in first, first[-4000:]
    assert f"job {job} attempt 2: run finished" in second
    return first, second


def _assert_trained_once(first: str, second: str, saved: int, iters: int, step_line: str) -> None:
    """Each iteration trained once: 1..saved in the first attempt, saved+1..iters in the second."""
    trained = [[int(i) for i in re.findall(step_line, part)] for part in (first, second)]
    assert trained == [list(range(1, saved + 1)), list(range(saved + 1, iters + 1))], trained


def test_preempted_job_requeues_and_ends_like_an_uninterrupted_run(slurm, reference, corpus_prefix, tmp_path):
    out = tmp_path / "run"
    job = _sbatch(slurm, tmp_path, ["--nodes=1", "--ntasks-per-node=2"],
                  base_args(corpus_prefix, out, schedule__train_iters=ITERS))
    _wait_for_steps(out / "metrics.jsonl", 2, slurm, job, timeout=150)
    first, second = _preempt_and_finish(slurm, job, tmp_path / f"job-{job}.out", timeout=170)
    saved = [int(m) for m in re.findall(r"saved checkpoint at iteration +(\d+)", first)]
    assert len(saved) == 1 and 2 <= saved[0] < ITERS, first[-4000:]
    assert "SIGUSR1 received" in first, first[-4000:]
    assert f"loaded checkpoint from {checkpoint.iteration_dir(out / 'ckpt', saved[0])}" in second, second[-4000:]
    _assert_trained_once(first, second, saved[0], ITERS, r" iteration +(\d+)/")
    iterations = [r["iteration"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert iterations == list(range(1, ITERS + 1))
    _assert_same_steps(out, reference)

    got = _tensors(checkpoint.iteration_dir(out / "ckpt", ITERS), tmp_path / "requeued.pt")
    ref = _tensors(checkpoint.iteration_dir(reference / "ckpt", ITERS), tmp_path / "reference.pt")
    assert got.keys() == ref.keys() and any("weight" in k for k in got)
    for name, tensor in ref.items():
        assert torch.equal(got[name], tensor), name


def test_failed_run_is_not_requeued(slurm, corpus_prefix, tmp_path):
    """An error exit (2: bad config) ends the job FAILED with that code; only 75 requeues."""
    args = base_args(corpus_prefix, tmp_path / "run", batch__micro_batch_size=0)
    job = _sbatch(slurm, tmp_path, ["--nodes=1", "--ntasks-per-node=1"], args)
    state = slurm.wait(job, timeout=120)
    log = (tmp_path / f"job-{job}.out").read_text()
    info = slurm.job(job)
    assert (state, info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0"), log[-4000:]
    assert f"job {job} attempt 1: training failed with exit code 2" in log
    assert "batch.micro_batch_size" in log


MLM_ITERS = 16
MLM_COMPARED = ("lm loss", "grad-norm", "emo_pool_size", "emo_doc_entropy", "load_balancing_loss")


@pytest.fixture(scope="module")
def megatron_lm_reference(corpus_prefix, tmp_path_factory) -> Path:
    """Megatron-LM's loop uninterrupted: torchrun, 2 processes on this machine."""
    out = tmp_path_factory.mktemp("torchrun_megatron_lm")
    run_megatron_lm(megatron_lm_args(corpus_prefix, out, steps=MLM_ITERS), nproc=2)
    return out


def test_preempted_megatron_lm_job_requeues_and_ends_like_an_uninterrupted_run(slurm, megatron_lm_reference,
                                                                             corpus_prefix, tmp_path):
    out = tmp_path / "run"
    # --no-load-rng: the CUDA-free harness's RNG tracker (tests/shims.py) saves no CUDA RNG states, which
    # Megatron-LM refuses to load; on a GPU --load restores them. The tiny model draws no random numbers after init.
    args = megatron_lm_args(corpus_prefix, out, "--load", str(out / "ckpt"), "--no-load-rng", steps=MLM_ITERS)
    job = _sbatch(slurm, tmp_path, ["--nodes=1", "--ntasks-per-node=2"], args, EMO_TRAINER="megatron_lm",
                  EMO_ENTRY=str(REPO / "tests/cuda_free/megatron_lm_cli.py"), CUDA_DEVICE_MAX_CONNECTIONS="1")
    log_path = tmp_path / f"job-{job}.out"
    step_line = rf" iteration +(\d+)/ +{MLM_ITERS} \|"
    _wait_for_steps(log_path, 2, slurm, job, timeout=240, step_line=step_line)
    first, second = _preempt_and_finish(slurm, job, log_path, timeout=300)
    assert "trainer megatron_lm" in first and "exiting program after receiving SIGTERM" in first, first[-4000:]
    saved = [int(m) for m in re.findall(r"successfully saved checkpoint from iteration +(\d+)", first)]
    assert len(saved) == 1 and 2 <= saved[0] < MLM_ITERS, first[-4000:]
    assert re.search(rf"successfully loaded checkpoint from .* at iteration {saved[0]}\b", second), second[-4000:]
    _assert_trained_once(first, second, saved[0], MLM_ITERS, step_line)
    assert checkpoint.latest_iteration(out / "ckpt") == MLM_ITERS

    got, ref = scalars(out / "tb"), scalars(megatron_lm_reference / "tb")
    for name in MLM_COMPARED:
        assert sorted(got[name]) == list(range(1, MLM_ITERS + 1)), name
        for step, value in ref[name].items():
            assert math.isclose(got[name][step], value, rel_tol=1e-6, abs_tol=1e-9), (name, step)
