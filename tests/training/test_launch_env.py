"""Rank and rendezvous from the launcher's environment: srun's SLURM_* variables, torchrun's variables winning."""

from __future__ import annotations

import pytest

from emo_plugin.training.distributed import LaunchEnv, first_host_of_nodelist, launch_env


@pytest.mark.parametrize(
    "nodelist, first",
    [("gpu[007-009,012],cpu1", "gpu007"), ("emo-node[1-2]", "emo-node1"), ("n3,n1", "n3"), ("a[5]", "a5"), ("h", "h")],
)
def test_first_host_of_a_compressed_nodelist(nodelist, first):
    assert first_host_of_nodelist(nodelist) == first


def _clear(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NODELIST"):
        monkeypatch.delenv(name, raising=False)


def test_srun_task_reads_slurm_variables_without_scontrol(monkeypatch, tmp_path):
    _clear(monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: the nodelist is expanded in Python
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[007-010]")
    assert launch_env() == LaunchEnv(5, 8, 1, "gpu007", str(20000 + 123456 % 20000))


def test_scontrol_expands_the_nodelist(monkeypatch, tmp_path):
    _clear(monkeypatch)
    fake = tmp_path / "scontrol"  # the real client's output format for `scontrol show hostnames`
    fake.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames weird[2-3]" ] && printf "weird-b\\nweird-c\\n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "weird[2-3]")
    monkeypatch.setenv("MASTER_PORT", "29999")
    assert launch_env() == LaunchEnv(0, 2, 0, "weird-b", "29999")


def test_torchrun_variables_win_over_slurm(monkeypatch):
    _clear(monkeypatch)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.5")
    monkeypatch.setenv("MASTER_PORT", "29400")
    assert launch_env() == LaunchEnv(1, 2, 1, "127.0.0.5", "29400")
