"""Interruptions: ``kill -9`` during a save keeps the last good checkpoint; SIGTERM saves and exits 75 (resumable)."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from emo_plugin import checkpoint
from tests.reliability import record
from tests.training.conftest import PYTHON, REPO, base_args, env, free_port, read_metrics


def _start(args):
    return subprocess.Popen([PYTHON, "-m", "emo_plugin.cli.pretrain", *args], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_during_save_then_sigterm_resume(corpus_prefix, tmp_path):
    root = tmp_path / "ckpt"
    for _attempt in range(3):  # the kill must land during a save; if that save finished first, try again
        killed = _start(base_args(corpus_prefix, tmp_path, schedule__train_iters=200, checkpoint__save_interval=1))
        deadline = time.time() + 120
        try:
            while time.time() < deadline and killed.poll() is None:
                # Kill once a save is in flight after at least one complete checkpoint exists.
                if (root / checkpoint.LATEST).exists() and list(root.glob("iter_*.tmp")):
                    break
                time.sleep(0.005)
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.communicate()
        assert killed.returncode == -signal.SIGKILL
        in_flight = sorted(root.glob("iter_*.tmp"))
        if in_flight:
            break
    assert in_flight, "no kill landed while a save was in progress (3 attempts)"
    good = checkpoint.latest_iteration(root)  # raises if 'latest' names an incomplete directory
    assert good is not None and good >= 1
    assert int(in_flight[-1].name[len("iter_") : -len(".tmp")]) > good  # the killed save never became 'latest'

    # Resume from the last good checkpoint (the stale .tmp is cleaned), then stop it with SIGTERM.
    metrics = tmp_path / "metrics.jsonl"
    metrics.unlink()
    resumed = _start(base_args(corpus_prefix, tmp_path, schedule__train_iters=200, checkpoint__save_interval=0))
    deadline = time.time() + 120
    while time.time() < deadline and resumed.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    resumed.send_signal(signal.SIGTERM)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 75, err[-3000:]
    assert f"loaded checkpoint from {checkpoint.iteration_dir(root, good)}" in out
    assert "SIGTERM received at iteration" in out
    last = max(k for k in read_metrics(metrics) if isinstance(k, int))
    assert min(k for k in read_metrics(metrics) if isinstance(k, int)) == good + 1
    assert checkpoint.latest_iteration(root) == last
    assert not list(root.glob("iter_*.tmp"))
    record("kill -9 during a checkpoint save, then a relaunch; SIGTERM later",
           seen=re.sub(r"iteration \d+", "iteration N", next(ln.strip() for ln in out.splitlines() if "SIGTERM" in ln)),
           kept="the last complete checkpoint (the partial .tmp folder is removed on restart)", area="run lifecycle")


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_iteration(corpus_prefix, tmp_path):
    """Two ranks launched directly (as srun does, so each rank's own exit code is seen); only rank 0 gets SIGUSR1.
    Both agree on the stop, save one checkpoint together and exit 75."""
    root, metrics = tmp_path / "ckpt", tmp_path / "metrics.jsonl"
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=200)
    rendezvous = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    ranks = [subprocess.Popen([PYTHON, "-m", "emo_plugin.cli.pretrain", *args], cwd=REPO,
                              env={**env(), **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.time() + 180
        while time.time() < deadline and all(r.poll() is None for r in ranks):
            if metrics.exists() and metrics.read_text():
                break
            time.sleep(0.05)
        ranks[0].send_signal(signal.SIGUSR1)
        outputs = [r.communicate(timeout=180) for r in ranks]
    finally:
        for r in ranks:
            if r.poll() is None:
                r.kill()
    assert [r.returncode for r in ranks] == [75, 75], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    stopped = checkpoint.latest_iteration(root)
    logged = outputs[1][0]  # the last rank logs; it was not signalled itself
    assert f"SIGTERM/SIGUSR1 received (on another rank) at iteration {stopped}: saving and exiting 75" in logged
    assert max(k for k in read_metrics(metrics) if isinstance(k, int)) == stopped
    assert not list(root.glob("iter_*.tmp"))
