"""A real one-node Slurm (slurmctld + slurmd + munge) in a temporary folder, for tests (slurm_notes.md).

Starts the daemons as the current (root) user, waits until the node is idle, and stops exactly the daemons
it started (by the pids in their pid files). ``unavailable()`` says why a cluster cannot be started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "sinfo", "scontrol", "munged", "munge")


def unavailable() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm/munge binaries missing: {', '.join(missing)} (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root on this machine"
    return None


def _mem_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 1024


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname()
        self.conf = self.root / "slurm.conf"
        self.pidfiles: list[Path] = []

    def _munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
            self.pidfiles.append(Path("/run/munge/munged.pid"))
            time.sleep(0.5)

    def start(self) -> "SlurmCluster":
        self._munge()
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=emotest",
                    f"SlurmctldHost={self.host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "JobAcctGatherType=jobacct_gather/none",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "SlurmctldPort=16817",
                    "SlurmdPort=16818",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    f"NodeName={self.host} CPUs={os.cpu_count()} RealMemory={_mem_mib()} State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        env = self.env()
        subprocess.run(["slurmctld"], env=env, check=True)
        self.pidfiles.append(r / "slurmctld.pid")
        subprocess.run(["slurmd"], env=env, check=True)
        self.pidfiles.append(r / "slurmd.pid")
        deadline = time.time() + 30
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            if "idle" in out:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"slurm node not idle after 30 s: {out!r}; see {r}/log")

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def wait(self, job_id: str, timeout: float) -> str:
        """Final job state (COMPLETED, FAILED, ...) from scontrol."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["scontrol", "show", "job", job_id], env=self.env(), capture_output=True, text=True).stdout
            state = next((w.split("=")[1] for w in out.split() if w.startswith("JobState=")), "UNKNOWN")
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "UNKNOWN"):
                return state
            time.sleep(1)
        return "TIMEOUT"

    def stop(self) -> None:
        for pidfile in reversed(self.pidfiles):
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        time.sleep(1)
