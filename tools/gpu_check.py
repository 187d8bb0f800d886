"""GPU verification of the training path: one command, one results file (JSON + a readable summary).

What it runs on one H100/H200 (run by ``tools/gpu_check.sh``, about 5 minutes, each step in its own process
with its own time limit, so one failure or hang does not lose the other steps' results):

* ``gpu_init``: the product CLI (``emo-pretrain``) on the GPU trains the small model 3 steps from scratch (TE
  spec, bf16, distributed optimizer, intra-document attention) and saves: the starting weights of every run
  below, each a weights-only start (``checkpoint.finetune``: same weights, data position 0, fresh optimizer).
* ``cpu_reference``: the product CLI on CPU (fp32 host path, local spec, dense intra-document mask) takes one
  step from those weights, in the background while the GPU works: the reference first-step loss.
* ``layer``: an EMO model (small size, 2 layers, bf16) built with Megatron's Transformer Engine spec and with
  its local spec, weights moved through a distributed checkpoint; per-token losses and gradient norms compared
  with causal attention, and TE's thd intra-document attention (``packed_sequences.py``) compared with the
  local spec's dense intra-document mask (the host path). Also: this package's context-parallel zigzag index
  against TE's ``thd_get_partitioned_indices``.
* ``train_bf16``: the product CLI on the GPU: TE spec, bf16, distributed optimizer, intra-document attention
  (thd), 50 steps from the same weights, saved at the end; first-step loss vs the CPU reference.
* ``train_fp8_delayed`` / ``train_fp8_tensorwise``: the same with FP8 (delayed and current/tensorwise
  scaling); loss gaps to bf16 at the first step and over the last 10 steps.
* ``bench_8192`` / ``bench_16384``: ``tools/bench_router.py`` at the EMO shape (hidden 2048, 128 experts,
  top-8, expert FFN 1024) with 8192 and 16384 tokens, bf16.

``--dry-run`` runs the same orchestration, configs, checkpoint hand-over, comparisons and result files on CPU
(tiny model; the "GPU" runs are CPU runs, so their first-step loss must equal the reference exactly; TE-only
parts are recorded as skipped). The test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = "gpu_check.json"
SUMMARY = "gpu_check.txt"

# Tolerances of the checks (bf16 activations against fp32 or a different kernel set).
LAYER_LOSS_RTOL = 5e-3  # mean per-token loss, TE vs local spec
LAYER_GRAD_NORM_RTOL = 5e-2
FIRST_STEP_RTOL = 5e-3  # GPU bf16 first-step loss vs the CPU fp32 host path from the same weights and data
FP8_GAP_RTOL = 5e-2  # FP8 vs bf16 loss, mean of the last 10 steps


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "gpu_check_results", help="results folder")
    p.add_argument("--dry-run", action="store_true", help="everything on CPU with a tiny model (CI)")
    p.add_argument("--budget", type=float, default=470.0, help="seconds for all steps together")
    p.add_argument("--worker", choices=["layer"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- run plan -------------------------------------------------------------------------------------------
class Plan:
    """Sizes and steps for the real GPU check or its CPU dry run."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.size = "tiny" if dry_run else "small"
        self.seq = 64 if dry_run else 1024
        self.micro_batch = 2 if dry_run else 4
        self.global_batch = 4 if dry_run else 8
        self.init_steps = 1 if dry_run else 3
        self.gpu_steps = 2 if dry_run else 50
        self.gpu_device = "cpu" if dry_run else "cuda"
        self.bench = (
            {"bench_128": ["--hidden", "64", "--experts", "8", "--topk", "2", "--ffn", "32", "--seq", "64",
                           "--batch", "2", "--iters", "2", "--warmup", "1"]}
            if dry_run
            else {
                f"bench_{tokens}": ["--hidden", "2048", "--experts", "128", "--topk", "8", "--ffn", "1024",
                                    "--seq", "4096", "--batch", str(tokens // 4096), "--bf16"]
                for tokens in (8192, 16384)
            }
        )

    def common(self, out: Path, prefix: str) -> dict:
        return {
            "model.size": self.size,
            "data.paths": prefix,
            "data.tokenizer_model": str(REPO / "examples/data/tokenizer.model"),
            "data.seq_length": self.seq,
            "data.intra_document_attention": "true",
            "batch.micro_batch_size": self.micro_batch,
            "batch.global_batch_size": self.global_batch,
            "eval.iters": 0,
            "eval.interval": 0,
            "logging.log_interval": 1,
            "logging.tensorboard_dir": "none",
            "checkpoint.save_interval": 0,
            "seed": 1234,
        }

    def cpu(self) -> dict:
        return {"parallel.device": "cpu", "precision.dtype": "fp32", "precision.fp8_recipe": "none"}

    def gpu(self, fp8: str | None) -> dict:
        if self.dry_run:
            return self.cpu()
        return {"parallel.device": "cuda", "precision.dtype": "bf16", "model.transformer_impl": "transformer_engine",
                "optimizer.use_distributed_optimizer": "true", "precision.fp8_recipe": fp8 or "none"}


# -- results file ---------------------------------------------------------------------------------------
class Results:
    def __init__(self, out: Path, dry_run: bool):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"mode": "dry-run (CPU)" if dry_run else "gpu", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "steps": {}}
        self.write()

    def step(self, name: str, record: dict) -> None:
        self.data["steps"][name] = record
        self.write()

    def write(self) -> None:
        """JSON and summary rewritten after every step (atomically), so a killed run keeps what it had."""
        for name, text in ((RESULTS, json.dumps(self.data, indent=2, default=str)), (SUMMARY, summary(self.data))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text + "\n")
            tmp.replace(self.out / name)

    @property
    def passed(self) -> bool:
        steps = self.data["steps"].values()
        return all(s["status"] in ("ok", "skipped") for s in steps) and all(
            c["passed"] for s in steps for c in s.get("checks", {}).values()
        )


def summary(data: dict) -> str:
    lines = [f"EMO GPU check ({data['mode']}), started {data['started']}"]
    env = data["steps"].get("environment", {})
    if env.get("status") == "ok":
        lines.append(f"  {env.get('device')} | torch {env.get('torch')} | TE {env.get('transformer_engine')} | "
                     f"megatron-core {env.get('megatron_core')}")
    for name, step in data["steps"].items():
        if name == "environment":
            continue
        head = f"[{step.get('status')}] {name} ({step.get('seconds', 0):.0f} s)"
        if step["status"] == "failed":
            head += f": {step.get('error', '').splitlines()[-1] if step.get('error') else ''}"
        if step["status"] == "skipped":
            head += f": {step.get('reason')}"
        lines.append(head)
        for key, value in step.get("figures", {}).items():
            lines.append(f"    {key}: {value:.6g}" if isinstance(value, float) else f"    {key}: {value}")
        for key, check in step.get("checks", {}).items():
            mark = "PASS" if check["passed"] else "FAIL"
            lines.append(f"    {mark} {key}: {check['value']:.3g} (tolerance {check['tolerance']:g})")
    if "finished" in data:
        lines.append(f"finished {data['finished']}: {'all checks passed' if data.get('passed') else 'FAILURES'}")
    return "\n".join(lines)


def check(value: float, tolerance: float) -> dict:
    return {"value": value, "tolerance": tolerance, "passed": bool(math.isfinite(value) and value <= tolerance)}


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# -- subprocess steps -----------------------------------------------------------------------------------
class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        return max(1.0, min(cap, self.end - time.monotonic()))


def child_env(cpu_threads: int | None = None) -> dict:
    """The environment of a step's process; ``cpu_threads`` marks a CPU run, which then sees no GPU at all
    (exactly like the CPU-only machines the host path is tested on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if cpu_threads:
        env["OMP_NUM_THREADS"] = str(cpu_threads)
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Wait; on a timeout or a non-zero exit, raise with the log's tail (the log stays in the results folder)."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"no result within {timeout:.0f} s; see {log}") from None
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"exit code {code}; see {log}; last output:\n{tail}")


def cli_command(config: dict) -> list[str]:
    return [sys.executable, "-m", "emo_plugin.cli.pretrain", "--config", "small_gpu",
            *[f"--{key}={value}" for key, value in config.items()]]


def losses(metrics: Path) -> list[float]:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = sorted((r["iteration"], r["lm loss"]) for r in records if "lm loss" in r and "lm loss validation" not in r)
    return [loss for _, loss in steps]


def run_guarded(results: Results, name: str, fn, *args) -> dict | None:
    began = time.monotonic()
    try:
        record = fn(*args) or {}
        record.setdefault("status", "ok")
    except Exception:  # noqa: BLE001 - every failure is recorded, the other steps still run
        record = {"status": "failed", "error": traceback.format_exc()}
    record["seconds"] = time.monotonic() - began
    results.step(name, record)
    return record


# -- steps ----------------------------------------------------------------------------------------------
def environment(plan: Plan) -> dict:
    import torch

    record = {"python": platform.python_version(), "torch": torch.__version__,
              "cuda_available": torch.cuda.is_available()}
    record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    try:
        from importlib.metadata import version

        record["megatron_core"] = version("megatron-core")
    except Exception as error:  # noqa: BLE001
        record["megatron_core"] = f"not found ({error})"
    try:
        import transformer_engine

        record["transformer_engine"] = transformer_engine.__version__
    except Exception as error:  # noqa: BLE001
        record["transformer_engine"] = f"not importable ({type(error).__name__})"
    if not plan.dry_run and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible; run with --dry-run for the CPU rehearsal")
    return record


def tokenise(out: Path, documents: int | None) -> str:
    """The bundled corpus (its first ``documents`` lines in a dry run), tokenised once for every run."""
    from emo_plugin.data.preprocess import preprocess_jsonl

    prefix = out / "data" / "corpus_text_document"
    if not Path(f"{prefix}.idx").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        corpus = REPO / "examples/data/corpus.jsonl"
        if documents is not None:
            head = out / "data" / "corpus_head.jsonl"
            head.write_text("".join(corpus.read_text().splitlines(keepends=True)[:documents]))
            corpus = head
        preprocess_jsonl([corpus], REPO / "examples/data/tokenizer.model", prefix, progress=False)
    return str(prefix)


def start_run(out: Path, name: str, config: dict, env: dict) -> subprocess.Popen:
    """``emo-pretrain`` in a fresh ``out/name`` (a checkpoint left there by an earlier check would be resumed)."""
    shutil.rmtree(out / name, ignore_errors=True)
    metrics = out / name / "metrics.jsonl"
    return start(cli_command({**config, "logging.metrics_file": str(metrics)}), out / name / "log.txt", env)


def training_step(plan: Plan, out: Path, name: str, config: dict, deadline: Deadline, cap: float) -> dict:
    """One ``emo-pretrain`` run; the steps it logged are kept even when it fails later (e.g. in the final save)."""
    log, metrics = out / name / "log.txt", out / name / "metrics.jsonl"
    proc = start_run(out, name, config, child_env())
    record = {}
    try:
        finish(proc, deadline.left(cap), log)
    except (RuntimeError, TimeoutError):
        record = {"status": "failed", "error": traceback.format_exc()}
    values = losses(metrics) if metrics.exists() else []
    if values:
        record.update(figures={"steps": len(values), "first_loss": values[0], "last_loss": values[-1]}, losses=values)
    elif not record:
        raise RuntimeError(f"the run logged no training step; see {log}")
    return record


def layer_step(plan: Plan, out: Path, deadline: Deadline) -> dict:
    target = out / "layer" / "result.json"
    target.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "layer", "--worker-out", str(target)]
    if plan.dry_run:
        cmd.append("--dry-run")
    log = out / "layer" / "log.txt"
    finish(start(cmd, log, child_env()), deadline.left(150), log)
    return json.loads(target.read_text())


def bench_step(plan: Plan, out: Path, name: str, args: list[str], deadline: Deadline) -> dict:
    target, log = out / name / "bench.json", out / name / "log.txt"
    cmd = [sys.executable, str(REPO / "tools/bench_router.py"), *args, "--json", str(target)]
    finish(start(cmd, log, child_env()), deadline.left(120), log)
    figures = json.loads(target.read_text())
    keep = ("tokens", "device", "stock_router_ms", "emo_router_ms", "router_ratio", "stock_layer_ms", "emo_layer_ms",
            "layer_ratio")
    return {"figures": {key: figures[key] for key in keep}}


def run_all(args: argparse.Namespace) -> int:
    plan = Plan(args.dry_run)
    out = args.out.resolve()
    results = Results(out, args.dry_run)
    deadline = Deadline(args.budget)
    run_guarded(results, "environment", environment, plan)
    tokenised = run_guarded(results, "tokenise", lambda: {"prefix": tokenise(out, 60 if plan.dry_run else None)})
    if tokenised["status"] != "ok":
        return finalize(results)
    common = plan.common(out, tokenised["prefix"])

    # The GPU trains a few steps from scratch and saves: the starting weights of every later run.
    init_dir = out / "gpu_init" / "checkpoint"
    init_config = {**common, **plan.gpu(None), "schedule.train_iters": plan.init_steps, "schedule.lr_warmup_iters": 1,
                   "optimizer.lr": 3e-3, "checkpoint.save": str(init_dir)}
    init = run_guarded(results, "gpu_init", training_step, plan, out, "gpu_init", init_config, deadline, 200)

    # Weights only from that checkpoint: iteration 0, data position 0, a fresh optimizer, on CPU and GPU alike.
    # The CPU reference (fp32 host path, local spec) runs in the background while the GPU does the rest.
    start_from = {"checkpoint.load": str(init_dir), "checkpoint.finetune": "true", "checkpoint.save": "none"}
    reference_proc = None
    if init.get("status") == "ok":
        reference_config = {**common, **plan.cpu(), **start_from, "schedule.train_iters": 1,
                            "schedule.lr_warmup_iters": 0}
        reference_proc = start_run(out, "cpu_reference", reference_config,
                                   child_env(cpu_threads=max(1, (os.cpu_count() or 2) - 4)))

    run_guarded(results, "layer", layer_step, plan, out, deadline)
    for name, bench_args in plan.bench.items():
        run_guarded(results, name, bench_step, plan, out, name, bench_args, deadline)

    gpu_runs = {"train_bf16": None, "train_fp8_delayed": "delayed", "train_fp8_tensorwise": "tensorwise"}
    records = {}
    for name, fp8 in gpu_runs.items():
        if fp8 and plan.dry_run:
            results.step(name, {"status": "skipped", "reason": "FP8 needs Transformer Engine on a GPU", "seconds": 0.0})
            continue
        if reference_proc is None:
            results.step(name, {"status": "skipped", "reason": "gpu_init failed: no starting weights", "seconds": 0.0})
            continue
        # bf16 also saves at the end (a distributed-optimizer checkpoint written on the GPU)
        save = str(out / name / "checkpoint") if fp8 is None else "none"
        config = {**common, **plan.gpu(fp8), **start_from, "schedule.train_iters": plan.gpu_steps,
                  "schedule.lr_warmup_iters": 5 if not plan.dry_run else 1, "checkpoint.save": save}
        records[name] = run_guarded(results, name, training_step, plan, out, name, config, deadline, 200)

    if reference_proc is not None:
        def wait_reference() -> dict:
            finish(reference_proc, deadline.left(300), out / "cpu_reference" / "log.txt")
            values = losses(out / "cpu_reference" / "metrics.jsonl")
            return {"figures": {"first_loss": values[0]}, "loss": values[0]}

        reference = run_guarded(results, "cpu_reference", wait_reference)
        run_guarded(results, "comparisons", compare, plan, reference, records)
    return finalize(results)


def compare(plan: Plan, reference: dict, records: dict) -> dict:
    """First-step loss of the GPU runs vs the CPU reference; FP8 loss gaps to bf16."""
    checks, figures = {}, {}
    bf16 = records.get("train_bf16") or {}
    if reference.get("status") == "ok" and bf16.get("losses"):
        gap = rel(bf16["losses"][0], reference["loss"])
        figures["first_step_loss_gpu"], figures["first_step_loss_cpu"] = bf16["losses"][0], reference["loss"]
        # the dry run's "GPU" run is the same CPU computation: it must agree to float rounding
        checks["first_step_loss_vs_cpu_rel"] = check(gap, 1e-6 if plan.dry_run else FIRST_STEP_RTOL)
        if len(bf16["losses"]) >= 10:  # training works: the last 5 steps' mean below the first 5 steps' mean
            first, last = sum(bf16["losses"][:5]) / 5, sum(bf16["losses"][-5:]) / 5
            checks["bf16_last5_vs_first5_rel_change"] = check((last - first) / first, 0.0)
    for name in ("train_fp8_delayed", "train_fp8_tensorwise"):
        fp8 = records.get(name) or {}
        if fp8.get("losses") and bf16.get("losses"):
            tail = min(10, len(fp8["losses"]), len(bf16["losses"]))
            mean_fp8 = sum(fp8["losses"][-tail:]) / tail
            mean_bf16 = sum(bf16["losses"][-tail:]) / tail
            figures[f"{name}_first_step_gap"] = fp8["losses"][0] - bf16["losses"][0]
            figures[f"{name}_last{tail}_mean_gap"] = mean_fp8 - mean_bf16
            checks[f"{name}_last{tail}_rel_gap"] = check(rel(mean_fp8, mean_bf16), FP8_GAP_RTOL)
    if not checks:
        raise RuntimeError("nothing to compare: the bf16 run or the CPU reference failed (see their steps)")
    return {"figures": figures, "checks": checks}


def finalize(results: Results) -> int:
    results.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results.data["passed"] = results.passed
    results.write()
    print((results.out / SUMMARY).read_text())
    return 0 if results.passed else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "layer":
        from gpu_check_layer import layer_check  # tools/ is this script's import path

        args.worker_out.parent.mkdir(parents=True, exist_ok=True)
        args.worker_out.write_text(json.dumps(layer_check(args.dry_run), indent=2))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
