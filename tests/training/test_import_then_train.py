"""The README's import → train workflow, as a user runs it: export a trained tiny model to Hugging Face, import
it for expert parallelism 3 (8 routed experts + 1 inert), then ``emo-pretrain --load <import>`` for 2 steps.

The import holds model weights only, so training starts from them with a fresh optimizer at iteration 0. Its
validation loss after a step of lr 1e-30 (weights unchanged in fp32) must equal the seed run's final validation
loss: the HF round trip and the inert expert change nothing the model computes. ``--emo.num_inert_experts=1``
alone is refused with the ``model.num_moe_experts`` value to use, not a shape traceback.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from emo_plugin import checkpoint
from tests.reliability import record
from tests.training.conftest import PYTHON, REPO, base_args, env, read_metrics, run_cli

TINY_LR = {"optimizer__lr": "1e-30", "optimizer__min_lr": 0}


def _tool(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([PYTHON, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_readme_import_then_train(seed_run, corpus_prefix, tmp_path):
    hf, imported = tmp_path / "hf", tmp_path / "import"
    _tool("tools/export_hf.py", "--checkpoint", str(seed_run / "ckpt"), "--output", str(hf), "--dtype", "fp32")
    summary = json.loads(_tool("tools/import_hf.py", "--hf", str(hf), "--output", str(imported),
                               "--target-expert-parallel-size", "3").stdout)
    assert summary["inert_experts"] == 1
    before = sorted(p.name for p in imported.rglob("*"))

    # Only the inert count, as the import summary suggests: refused with what to set, nothing written.
    run = tmp_path / "run"
    proc = run_cli(base_args(corpus_prefix, run, checkpoint__load=imported, emo__num_inert_experts=1), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"{imported}/iter_0000000: the checkpoint's model has another architecture (model.num_moe_experts: "
            "checkpoint 9, now 8); set these fields to the checkpoint's values to load it; with "
            "emo.num_inert_experts given, model.num_moe_experts counts the expert slots (routed + inert), so this "
            "checkpoint needs "
            "--model.num_moe_experts=9 --emo.num_inert_experts=1") in proc.stderr
    assert not (run / "ckpt").exists()
    seen = next(line for line in proc.stderr.splitlines() if "config error" in line)
    record("emo-pretrain --load <import_hf output> --emo.num_inert_experts=1 (model.num_moe_experts not raised)",
           seen=seen, kept="the imported checkpoint; nothing written; exit 2", area="run lifecycle")

    args = base_args(corpus_prefix, run, checkpoint__load=imported, emo__num_inert_experts=1,
                     model__num_moe_experts=9, schedule__train_iters=2, eval__iters=1, eval__interval=1, **TINY_LR)
    out = run_cli(args).stdout
    assert (f"loaded checkpoint from {imported}/iter_0000000 at iteration 0 (weights only: iteration, optimizer, "
            "data position and RNG start fresh): checkpoint.load, model weights only (the checkpoint holds no "
            "optimizer or iteration state)") in out
    trained, seeded = read_metrics(run / "metrics.jsonl"), read_metrics(seed_run / "metrics.jsonl")
    assert sorted(k for k in trained if isinstance(k, int)) == [1, 2]
    assert trained[("valid", 1)]["lm loss validation"] == pytest.approx(
        seeded[("valid", 2)]["lm loss validation"], abs=1e-5)
    assert checkpoint.latest_iteration(run / "ckpt") == 2
    assert sorted(p.name for p in imported.rglob("*")) == before  # the import is an input: never written
