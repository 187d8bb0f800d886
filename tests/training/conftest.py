"""Helpers for trainer tests: the tiny CPU config shortened for tests, and a CLI runner.

Training runs happen in subprocesses (``python -m emo_plugin.cli.pretrain`` or ``torchrun``) so each has
its own process group and Megatron state, exactly as users launch it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emo_plugin.free_port import free_port

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def base_args(corpus_prefix: str, out: Path, **overrides) -> list[str]:
    """The tiny CPU config, shortened for tests; ``overrides`` are dotted keys with '.' written as '__'."""
    args = {
        "data.paths": corpus_prefix,
        "data.tokenizer_model": str(REPO / "examples/data/tokenizer.model"),
        "schedule.train_iters": 4,
        "schedule.lr_warmup_iters": 1,
        "schedule.lr_decay_iters": 8,
        "eval.iters": 0,
        "logging.log_interval": 1,
        "logging.metrics_file": str(out / "metrics.jsonl"),
        "checkpoint.save": str(out / "ckpt"),
        "checkpoint.save_interval": 0,
    }
    args.update({k.replace("__", "."): v for k, v in overrides.items()})
    return ["--config", "tiny_cpu"] + [f"--{k}={v}" for k, v in args.items()]


_LAUNCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def env() -> dict:
    """The test process's environment minus any rendezvous it set up for itself (tests/conftest.py)."""
    base = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS and not k.startswith("SLURM_")}
    return {**base, "PYTHONPATH": str(REPO), "EMO_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], *, nproc: int = 1, shimmed: bool = False, timeout: float = 240, check: bool = True):
    script = [str(REPO / "tests/training/shimmed_cli.py")] if shimmed else ["-m", "emo_plugin.cli.pretrain"]
    if nproc == 1:
        cmd = [PYTHON, *script, *args]
    else:
        cmd = [
            PYTHON, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}",
            *script, *args,
        ]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_metrics(path: Path) -> dict[int, dict]:
    """Training-step records by iteration (validation records under key ('valid', iteration))."""
    records = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        key = ("valid", rec["iteration"]) if "lm loss validation" in rec else rec["iteration"]
        records[key] = rec
    return records


@pytest.fixture(scope="session")
def seed_run(corpus_prefix, tmp_path_factory) -> Path:
    """A finished 2-step run: saved every step with ``keep_last_n=1`` (only iter_0000002 stays), validated at the
    end (metrics record ('valid', 2)). The starting point of the resume, fine-tune and import tests."""
    out = tmp_path_factory.mktemp("seed")
    run_cli(base_args(corpus_prefix, out, schedule__train_iters=2, checkpoint__save_interval=1,
                      checkpoint__keep_last_n=1, eval__iters=1, eval__interval=0))
    return out
