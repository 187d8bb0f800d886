"""scripts/install_slurm.sh: quiet and quick when Slurm is present, a non-zero exit with the reason when it cannot
install (the Slurm tests then fail instead of skipping)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from tests.training.conftest import REPO
from tests.training.slurm_cluster import BINARIES

SCRIPT = str(REPO / "scripts/install_slurm.sh")


def test_installs_or_finds_slurm_then_returns_at_once():
    subprocess.run(["bash", SCRIPT], check=True, capture_output=True)  # installs on a machine without Slurm
    assert [b for b in BINARIES if shutil.which(b) is None] == []
    start = time.time()
    again = subprocess.run(["bash", SCRIPT], capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr == "" and time.time() - start < 5


def test_without_apt_get_it_fails_and_names_what_is_missing(tmp_path):
    (tmp_path / "id").symlink_to(shutil.which("id"))  # a PATH with neither Slurm nor apt-get
    proc = subprocess.run(["/bin/bash", SCRIPT], env={"PATH": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "missing slurmctld slurmd sbatch" in proc.stderr
    if os.geteuid() == 0:
        assert "no apt-get on this machine" in proc.stderr
    else:
        assert "need root" in proc.stderr
