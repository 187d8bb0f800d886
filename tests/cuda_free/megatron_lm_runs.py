"""Runs of ``emo-pretrain-megatron`` (Megatron-LM's ``pretrain``) and of ``emo-pretrain`` on the same run. TESTS ONLY.

``megatron_lm_args`` is tests/training's tiny config written as Megatron-LM flags: ``--emo-size tiny`` for the
model, and the data, batch, optimizer and schedule flags that ``emo_pretrain_args`` sets for ``emo-pretrain``.
Both loops start from the same imported checkpoint (``--load`` / ``checkpoint.load``), so the comparison does not
depend on how each loop draws its initial weights from the seed (under the CUDA-free harness every CUDA RNG
stream is the host RNG, which Megatron-LM's JIT warm-up also draws from), and use the conventions the two share:

* a constant learning rate: Megatron-LM steps its scheduler after the optimizer, so step ``i`` runs at the
  schedule's value for ``i − 1`` (the first warm-up step at lr 0); emo-pretrain runs step ``i`` at lr(i);
* no weight decay: Megatron-LM decays embeddings and the output layer, emo-pretrain does not.

``MEGATRON_LM_ON_CPU`` are the flags any Megatron-LM run without Transformer Engine and Apex needs (no fused
RoPE, no persistent or fused-gradient-accumulation kernels; Megatron's local layers).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.training.conftest import PYTHON, REPO, env, free_port

MEGATRON_LM_ON_CPU = ["--transformer-impl", "local", "--no-rope-fusion", "--no-persist-layer-norm",
                      "--no-gradient-accumulation-fusion"]
TOKENIZER = str(REPO / "examples/data/tokenizer.model")


def megatron_lm_args(corpus_prefix: str, out: Path, *extra: str, steps: int = 2) -> list[str]:
    return ["--emo-size", "tiny", *MEGATRON_LM_ON_CPU,
            "--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters", str(steps),
            "--lr", "3e-3", "--lr-decay-style", "constant", "--lr-warmup-iters", "0", "--weight-decay", "0",
            "--clip-grad", "1.0", "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--adam-eps", "1e-8",
            "--seed", "1234", "--tokenizer-model", TOKENIZER, "--data-path", corpus_prefix, "--split", "98,2,0",
            "--eval-iters", "0", "--eval-interval", "1000", "--log-interval", "1", "--num-workers", "1",
            "--tensorboard-dir", str(out / "tb"), "--save", str(out / "ckpt"), "--save-interval", str(steps),
            *extra]


def emo_pretrain_args(corpus_prefix: str, out: Path, *extra: str, steps: int = 2) -> list[str]:
    """emo-pretrain's GPU path on the same run as ``megatron_lm_args``."""
    return ["--config", "tiny_cpu", f"--data.paths={corpus_prefix}", f"--data.tokenizer_model={TOKENIZER}",
            "--data.split=98,2,0", "--data.intra_document_attention=false", f"--schedule.train_iters={steps}",
            "--schedule.lr_warmup_iters=0", "--schedule.lr_decay_style=constant", "--optimizer.lr=3e-3",
            "--optimizer.weight_decay=0", "--eval.iters=0", "--logging.log_interval=1",
            f"--logging.tensorboard_dir={out / 'tb'}", f"--logging.metrics_file={out / 'metrics.jsonl'}",
            f"--checkpoint.save={out / 'ckpt'}", "--checkpoint.save_interval=0", "--parallel.device=cuda",
            "--model.transformer_impl=local", *extra]


def run_megatron_lm(args: list[str], nproc: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun tests/cuda_free/megatron_lm_cli.py <args>``; the output, or an error with its tail."""
    cmd = [PYTHON, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}",
           str(REPO / "tests/cuda_free/megatron_lm_cli.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO, env={**env(), "CUDA_DEVICE_MAX_CONNECTIONS": "1"}, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def scalars(tensorboard_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of a TensorBoard log: name → {step: value} (the last value written for a step wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
