"""examples/slurm/pretrain.sbatch on a real two-node Slurm cluster (tests/training/slurm_cluster.py).

* Two nodes, one CPU rank each, rendezvous on the first node: the same losses, bit for bit, as torchrun with
  two processes on one machine (same config and seed).

Slurm and munge are installed by scripts/install_slurm.sh when missing; a machine where that fails fails here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from emo_plugin.training import checkpoint
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


def _sbatch(slurm: SlurmCluster, log_dir: Path, options: list[str], args: list[str]) -> str:
    job_env = {**env(), "SLURM_CONF": str(slurm.conf), "PYTHON": PYTHON, "EMO_REPO": str(REPO),
               "MASTER_PORT": str(free_port())}
    submit = subprocess.run(["sbatch", "--parsable", f"--output={log_dir}/job-%j.out", *options, str(SCRIPT), *args],
                            env=job_env, capture_output=True, text=True, check=True)
    return submit.stdout.strip().split(";")[0]


def _assert_same_steps(out: Path, reference: Path) -> None:
    got, ref = read_metrics(out / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    for iteration in range(1, ITERS + 1):
        for name in COMPARED:
            assert got[iteration][name] == ref[iteration][name], (iteration, name)


def test_two_nodes_train_like_torchrun_on_one_machine(slurm, reference, corpus_prefix, tmp_path):
    out = tmp_path / "run"
    job = _sbatch(slurm, tmp_path, ["--nodes=2", "--ntasks-per-node=1"],
                  base_args(corpus_prefix, out, schedule__train_iters=ITERS))
    state = slurm.wait(job, timeout=170)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert f"job {job} attempt 1: 2 tasks on 2 node(s) (emo-node[1-2]), rendezvous on emo-node1" in log, log[-4000:]
    for node in NODES:  # each node's slurmd started one task of the training step
        assert f"launch task StepId={job}.0 " in (slurm.root / "log" / f"slurmd-{node}.log").read_text(), node
    assert checkpoint.latest_iteration(out / "ckpt") == ITERS
    assert sorted(k for k in read_metrics(out / "metrics.jsonl") if isinstance(k, int)) == list(range(1, ITERS + 1))
    _assert_same_steps(out, reference)
