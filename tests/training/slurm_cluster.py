"""A real Slurm cluster of two nodes on one machine (slurmctld + two slurmd + munge), for tests.

Each node is a slurmd in its own UTS namespace (its own hostname, so slurmd finds its ``NodeName`` as on a real
node) and mount namespace (its own view of ``/etc/hosts`` naming both nodes), reached by slurmctld at its own
loopback address (``NodeAddr=127.0.0.2``, ``127.0.0.3``) and port. Every address is inside 127.0.0.0/8; the
machine's ``/etc/hosts`` is not touched. Jobs started on a node see that node's hostname, so the trainer's
rendezvous host (first node of ``SLURM_JOB_NODELIST``) resolves to the first node's loopback address.

``scripts/install_slurm.sh`` installs Slurm and munge when they are missing; ``ensure_installed`` runs it and
raises when that is impossible, so that the tests fail instead of skipping. Daemons run as root (the CI user) and
are stopped by the pids in their pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from emo_plugin.free_port import free_port

REPO = Path(__file__).resolve().parents[2]
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "squeue", "munged", "munge", "unmunge")
NODES = {"emo-node1": "127.0.0.2", "emo-node2": "127.0.0.3"}


def ensure_installed() -> None:
    """Install Slurm and munge if missing (Debian packages, quick when present); raise with the reason otherwise."""
    if os.geteuid() != 0:
        raise RuntimeError("the Slurm tests start slurmctld/slurmd/munged and need root (CI runs as root)")
    proc = subprocess.run(["bash", str(REPO / "scripts/install_slurm.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/install_slurm.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise RuntimeError(f"still missing after scripts/install_slurm.sh: {', '.join(missing)}")


def _mem_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(int(line.split()[1]) // 1024 - 512, 256)
    return 1024


class SlurmCluster:
    """``start()`` writes slurm.conf under ``root``, starts munged (if not running), slurmctld and the nodes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.hosts = self.root / "hosts"
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
            deadline = time.time() + 10
            while subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
                if time.time() > deadline:
                    raise RuntimeError("munged started but 'munge -n | unmunge' still fails")
                time.sleep(0.2)

    def _write_config(self) -> None:
        r = self.root
        cpus = os.cpu_count() or 1
        lines = [
            "ClusterName=emotest",
            f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
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
            "KillWait=10",
            # A requeued job waits one credential lifetime (default 120 s) before it may start again, and the
            # main scheduler runs every 60 s by default: both shortened so that a requeue test takes seconds.
            "AuthInfo=cred_expire=5",
            "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=1",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool-%n",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
        ]
        for name, addr in NODES.items():
            lines.append(f"NodeName={name} NodeAddr={addr} Port={free_port()} CPUs={cpus} RealMemory={_mem_mib()}")
        lines.append(f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        # The nodes' /etc/hosts: the machine's entries plus both node names at their loopback addresses.
        extra = "".join(f"{addr} {name}\n" for name, addr in NODES.items())
        self.hosts.write_text(Path("/etc/hosts").read_text().rstrip("\n") + "\n" + extra)

    def _start_node(self, name: str) -> None:
        # unshare: new UTS + mount namespaces; the bind mount and hostname stay inside them. slurmd daemonises
        # and keeps the namespaces; its pid file is how stop() finds it.
        script = 'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd'
        subprocess.run(["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                        str(self.hosts), name], env=self.env(), check=True)
        self.pidfiles.append(self.root / f"slurmd-{name}.pid")

    def start(self) -> "SlurmCluster":
        try:
            self._start()
        except BaseException:
            self.stop()  # whatever did start
            raise
        return self

    def _start(self) -> None:
        self._munge()
        for d in ("state", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._write_config()
        subprocess.run(["slurmctld"], env=self.env(), check=True)
        self.pidfiles.append(self.root / "slurmctld.pid")
        for name in NODES:
            self._start_node(name)
        deadline = time.time() + 60
        out = ""
        while time.time() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t").stdout
            if sorted(out.split()) == sorted([*NODES, *["idle"] * len(NODES)]):
                return
            time.sleep(0.5)
        raise RuntimeError(f"slurm nodes not idle after 60 s (sinfo: {out!r}); see the logs in {self.root}/log")

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=check)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as key → value (JobState, Restarts, ExitCode, NodeList, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(w.split("=", 1) for w in out.split() if "=" in w)

    def wait(self, job_id: str, timeout: float) -> str:
        """Final job state (COMPLETED, FAILED, ...); 'TIMEOUT' if still unfinished after ``timeout`` seconds, and
        then the job is cancelled (a job requeueing itself forever would outlive the cluster's daemons)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.job(job_id).get("JobState", "UNKNOWN")
            if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "UNKNOWN"):
                return state
            time.sleep(0.5)
        self.run("scancel", "--full", job_id)
        return "TIMEOUT"

    def stop(self) -> None:
        for pidfile in reversed(self.pidfiles):
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        self.pidfiles.clear()
        time.sleep(1)
