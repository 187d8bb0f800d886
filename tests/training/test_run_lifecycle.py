"""Where a run starts and how it ends, from the command line (emo_plugin/training/start_point.py, exit_codes.py).

* ``--load A --save B``, preempted (SIGUSR1) and relaunched: the relaunch resumes from B, not A; exit 75, then 0.
* A finished run relaunched says it is complete and trains nothing.
* The run-time budget saves and exits 75 after one step; ``allow_missing_load`` is the only way past a bad --load.
* A ``--load`` typo and a changed architecture are config errors naming the path / the fields; nothing is written.
* ``--finetune`` loads weights only: iteration and data restart at 0 and the validation loss of the loaded weights
  equals the one the seed run measured with them.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from emo_plugin import checkpoint
from tests.reliability import record
from tests.training.conftest import PYTHON, REPO, base_args, env, read_metrics, run_cli

TINY_LR = {"optimizer__lr": "1e-30", "optimizer__min_lr": 0}  # AdamW steps that leave fp32 weights unchanged


def _iterations(metrics_file) -> list[int]:
    return sorted(k for k in read_metrics(metrics_file) if isinstance(k, int))


def _line(text: str, marker: str) -> str:
    """The output line holding ``marker``, with run-dependent iteration numbers written as N."""
    found = next(line.strip() for line in text.splitlines() if marker in line)
    for pattern, fixed in ((r"iter_\d{7}", "iter_N"), (r"iteration \d+", "iteration N"), (r"iters=\d+", "iters=N")):
        found = re.sub(pattern, fixed, found)
    return found


def _tree(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def test_keep_last_n_during_a_run(seed_run):
    assert sorted(p.name for p in (seed_run / "ckpt").iterdir()) == ["iter_0000002", checkpoint.LATEST]


def test_preempted_run_resumes_from_save_not_load(seed_run, corpus_prefix, tmp_path):
    seed, save = seed_run / "ckpt", tmp_path / "ckpt"
    before = _tree(seed)
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=200, checkpoint__load=seed)
    job = subprocess.Popen([PYTHON, "-m", "emo_plugin.cli.pretrain", *args], cwd=REPO, env=env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and job.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    out, err = job.communicate(timeout=180)
    assert job.returncode == 75, err[-3000:]
    stopped = checkpoint.latest_iteration(save)
    assert f"SIGUSR1 received at iteration {stopped}: saving and exiting 75" in out
    assert (f"loaded checkpoint from {seed}/iter_0000002 at iteration 2 (full training state): checkpoint.load, "
            f"full training state, because checkpoint.save={save} holds no checkpoint yet") in out
    assert _iterations(metrics) == list(range(3, stopped + 1))

    # The relaunch (same command, as a requeue runs it) continues from B, one more step.
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=stopped + 1, checkpoint__load=seed)
    out = run_cli(args).stdout
    assert (f"loaded checkpoint from {save}/iter_{stopped:07d} at iteration {stopped} (full training state): "
            f"the newest checkpoint in checkpoint.save") in out
    assert _iterations(metrics) == list(range(3, stopped + 2))  # each iteration once, none repeated

    # Relaunching a finished run says so and trains nothing.
    proc = run_cli(args)
    assert f"already complete: the checkpoint is at iteration {stopped + 1} and schedule.train_iters={stopped + 1}" \
        in proc.stdout
    assert _iterations(metrics) == list(range(3, stopped + 2))
    assert _tree(seed) == before  # the --load folder is never written
    record("emo-pretrain --load A --save B, preempted (SIGUSR1), then relaunched with the same command",
           seen=_line(out, "loaded checkpoint from"),
           kept="A untouched; B's checkpoint, resumed: no step trained twice",
           area="run lifecycle")
    record("relaunching a run that already reached schedule.train_iters", seen=_line(proc.stdout, "already complete"),
           kept="the checkpoint; nothing trained, exit 0", area="run lifecycle")


def test_run_time_budget_saves_after_one_step_and_exits_75(corpus_prefix, tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=200, schedule__exit_duration_minutes="1e-4",
                     checkpoint__load=missing, checkpoint__allow_missing_load="true")
    proc = run_cli(args, check=False)
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert (f"no checkpoint loaded: checkpoint.load={missing} holds no checkpoint and "
            "checkpoint.allow_missing_load=true: training from scratch") in proc.stdout
    assert ("run-time budget schedule.exit_duration_minutes=0.0001 reached at iteration 1: saving and exiting 75"
            in proc.stdout)
    assert checkpoint.latest_iteration(tmp_path / "ckpt") == 1
    assert _iterations(tmp_path / "metrics.jsonl") == [1]
    record("emo-pretrain --exit-duration-in-mins=1e-4 (run-time budget shorter than start-up)",
           seen=_line(proc.stdout, "run-time budget"), kept="a checkpoint after one step; exit 75 (resumable)",
           area="run lifecycle")


def test_load_typo_is_an_error_and_writes_nothing(corpus_prefix, tmp_path):
    typo = tmp_path / "chekpoints"
    proc = run_cli(base_args(corpus_prefix, tmp_path, checkpoint__load=typo), check=False)
    assert proc.returncode == 2
    assert (f"emo-pretrain: config error: checkpoint.load={typo}: does not exist; expected a checkpoint folder "
            "written by emo-pretrain or tools/import_hf.py") in proc.stderr
    assert "checkpoint.allow_missing_load=true" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "metrics.jsonl").exists()
    record("emo-pretrain --load <a path that does not exist>", seen=_line(proc.stderr, "config error"),
           kept="nothing written (no checkpoint folder, no metrics); exit 2", area="run lifecycle")


def test_changed_architecture_names_the_fields(seed_run, corpus_prefix, tmp_path):
    seed = seed_run / "ckpt"
    before = _tree(seed)
    args = base_args(corpus_prefix, tmp_path, checkpoint__load=seed, model__num_layers=3, model__hidden_size=128)
    proc = run_cli(args, check=False)
    assert proc.returncode == 2
    assert (f"config error: {seed}/iter_0000002: the checkpoint's model has another architecture "
            "(model.num_layers: checkpoint 2, now 3, model.hidden_size: checkpoint 64, now 128)") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _tree(seed) == before and not (tmp_path / "ckpt").exists()
    record("emo-pretrain --load <checkpoint> --model.num_layers=3 --model.hidden_size=128 (another architecture)",
           seen=_line(proc.stderr, "config error"), kept="the checkpoint, unchanged; nothing written; exit 2",
           area="run lifecycle")


def test_finetune_loads_weights_only(seed_run, corpus_prefix, tmp_path):
    seed = seed_run / "ckpt"
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=1, checkpoint__load=seed, eval__iters=1,
                     eval__interval=1, **TINY_LR) + ["--finetune"]
    out = run_cli(args).stdout
    assert (f"loaded checkpoint from {seed}/iter_0000002 at iteration 2 (weights only: iteration, optimizer, data "
            "position and RNG start fresh): checkpoint.load, model weights only (checkpoint.finetune=true)") in out
    tuned, seeded = read_metrics(tmp_path / "metrics.jsonl"), read_metrics(seed_run / "metrics.jsonl")
    assert _iterations(tmp_path / "metrics.jsonl") == [1]
    assert f" iteration {1:8d}/{1:8d} | consumed samples: {8:10d} |" in out  # data restarts at sample 0
    # Same weights (the 1e-30 step leaves them), same validation batches: the seed run's number.
    assert tuned[("valid", 1)]["lm loss validation"] == pytest.approx(seeded[("valid", 2)]["lm loss validation"],
                                                                       abs=1e-6)
    assert checkpoint.latest_iteration(tmp_path / "ckpt") == 1
