"""The router benchmark runs end to end on the host and reports both ratios (no timing assertions)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_router_runs_and_writes_figures(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(ROOT / "tools/bench_router.py"), "--hidden", "32", "--experts", "8", "--topk", "2",
        "--ffn", "16", "--seq", "32", "--batch", "2", "--shared", "1", "--pool-min", "2", "--pool-max", "8",
        "--mean-doc-len", "8", "--warmup", "1", "--iters", "2", "--json", str(out),
    ]
    with socket.socket() as sock:  # the parent's process group holds MASTER_PORT: give the benchmark its own
        sock.bind(("127.0.0.1", 0))
        env = {**os.environ, "MASTER_PORT": str(sock.getsockname()[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["tokens"] == 64 and figures["layer_ratio"] > 0 and figures["router_ratio"] > 0
    assert "MoE layer fwd+bwd" in proc.stdout
