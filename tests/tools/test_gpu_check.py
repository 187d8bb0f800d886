"""tools/gpu_check.sh: its CPU dry run end to end, and the guarding that keeps one failed step from losing the rest.

The dry run is the GPU check's own orchestration (tokenising, the init, reference and training runs through
the product CLI, the checkpoint hand-over with ``checkpoint.finetune``, the layer worker, the benchmark, result
files) with a tiny model on CPU; its "GPU" run is a CPU run from the same weights and data, so its first-step
loss must equal the reference's exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "tools/gpu_check.sh"), "--dry-run", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_dry_run_completes_every_step(dry_run):
    proc, out = dry_run
    results = json.loads((out / "gpu_check.json").read_text())
    assert proc.returncode == 0, (out / "gpu_check.txt").read_text()
    steps = results["steps"]
    assert list(steps) == ["environment", "tokenise", "gpu_init", "layer", "bench_128", "train_bf16",
                           "train_fp8_delayed", "train_fp8_tensorwise", "cpu_reference", "comparisons"]
    assert {name: s["status"] for name, s in steps.items() if s["status"] != "ok"} == {
        "train_fp8_delayed": "skipped", "train_fp8_tensorwise": "skipped"}
    comparison = steps["comparisons"]
    assert comparison["checks"]["first_step_loss_vs_cpu_rel"]["value"] == 0.0
    assert comparison["figures"]["first_step_loss_gpu"] == steps["cpu_reference"]["loss"]
    assert steps["train_bf16"]["figures"]["steps"] == 2
    layer = steps["layer"]
    assert layer["checks"]["causal_mean_loss_rel"]["value"] == 0.0  # the dry run's two sides are one model
    assert layer["skipped_parts"]
    assert steps["bench_128"]["figures"]["tokens"] == 128
    summary = (out / "gpu_check.txt").read_text()
    assert "all checks passed" in summary and "PASS first_step_loss_vs_cpu_rel" in summary


def test_a_failed_step_is_recorded_and_the_rest_still_run(tmp_path):
    gpu_check = _gpu_check_module()
    results = gpu_check.Results(tmp_path, dry_run=True)

    def broken():
        raise RuntimeError("simulated failure")

    gpu_check.run_guarded(results, "first", broken)
    gpu_check.run_guarded(results, "second", lambda: {"figures": {"x": 1.5}, "checks": {"x": gpu_check.check(0.5, 1)}})
    assert gpu_check.finalize(results) == 1
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["steps"]["first"]["status"] == "failed" and "simulated failure" in saved["steps"]["first"]["error"]
    assert saved["steps"]["second"]["status"] == "ok" and saved["passed"] is False
    summary = (tmp_path / "gpu_check.txt").read_text()
    assert "[failed] first" in summary and "PASS x" in summary and "FAILURES" in summary


def test_comparisons_flag_a_first_step_gap_and_an_fp8_gap():
    gpu_check = _gpu_check_module()
    plan = gpu_check.Plan(dry_run=False)
    reference = {"status": "ok", "loss": 9.0}
    records = {
        "train_bf16": {"status": "ok", "losses": [9.0 * (1 + 2 * gpu_check.FIRST_STEP_RTOL)] + [8.0] * 49},
        "train_fp8_delayed": {"status": "ok", "losses": [9.0] + [8.0] * 49},
        "train_fp8_tensorwise": {"status": "ok", "losses": [9.0] + [8.0 * (1 + 2 * gpu_check.FP8_GAP_RTOL)] * 49},
    }
    checks = gpu_check.compare(plan, reference, records)["checks"]
    assert not checks["first_step_loss_vs_cpu_rel"]["passed"]
    assert checks["bf16_last5_vs_first5_rel_change"]["passed"]
    assert checks["train_fp8_delayed_last10_rel_gap"]["passed"]
    assert not checks["train_fp8_tensorwise_last10_rel_gap"]["passed"]
    with pytest.raises(RuntimeError, match="nothing to compare"):
        gpu_check.compare(plan, {"status": "failed"}, {"train_bf16": records["train_bf16"]})
