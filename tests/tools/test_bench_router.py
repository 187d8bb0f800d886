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
    assert figures["tokens"] == 32 * 2
    for part, label in (("router", "router fwd+bwd"), ("layer", "MoE layer fwd+bwd")):
        emo_ms, stock_ms = figures[f"emo_{part}_ms"], figures[f"stock_{part}_ms"]
        assert emo_ms > 0 and stock_ms > 0  # medians of measured times (their size is not asserted: shared CPU)
        assert figures[f"{part}_ratio"] == emo_ms / stock_ms
        assert f"{label}: stock {stock_ms:.3f} ms, EMO {emo_ms:.3f} ms, ratio {emo_ms / stock_ms:.3f}" in proc.stdout
