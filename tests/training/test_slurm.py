"""The sbatch script on a real one-node Slurm: 2 CPU tasks (gloo), srun-native, trains to a checkpoint."""

from __future__ import annotations

import subprocess

import pytest

from emo_plugin.training import checkpoint
from tests.training.conftest import PYTHON, REPO, base_args, env, read_metrics
from tests.training.slurm_cluster import SlurmCluster, unavailable


@pytest.fixture
def slurm(tmp_path):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path / "slurm").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_sbatch_two_cpu_tasks_to_checkpoint(slurm, corpus_prefix, tmp_path):
    out = tmp_path / "run"
    args = base_args(corpus_prefix, out, schedule__train_iters=3)
    job_env = {**env(), "SLURM_CONF": str(slurm.conf), "PYTHON": PYTHON, "EMO_REPO": str(REPO)}
    submit = subprocess.run(
        ["sbatch", "--parsable", "--ntasks=2", "--ntasks-per-node=2", f"--output={tmp_path}/job-%j.out",
         str(REPO / "examples/slurm/pretrain.sbatch"), *args],
        env=job_env, capture_output=True, text=True, check=True,
    )
    job_id = submit.stdout.strip().split(";")[0]
    state = slurm.wait(job_id, timeout=240)
    log = (tmp_path / f"job-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert "2 tasks" in log and "device cpu" in log
    assert checkpoint.latest_iteration(out / "ckpt") == 3
    assert sorted(k for k in read_metrics(out / "metrics.jsonl") if isinstance(k, int)) == [1, 2, 3]
