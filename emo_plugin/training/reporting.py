"""Console lines, TensorBoard scalars (Megatron's names) and an exact JSON-lines record of every step.

Validation reports two losses: ``lm loss validation`` routes plain top-k over all routed experts (the exported
Hugging Face model's default and the paper's full-model metric), ``lm loss validation pooled`` routes each
document inside ``emo.pool_eval`` experts, as EMO's evaluation mode does.

Only the last rank writes (Megatron's convention: it holds the loss under pipeline parallelism); every rank
takes part in the MoE tracker's ``report`` because it all-reduces.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker


def is_logging_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == dist.get_world_size() - 1


def memory_scalars(device: str) -> dict[str, float]:
    if device == "cuda":
        return {
            "mem-allocated-bytes": float(torch.cuda.memory_allocated()),
            "mem-max-allocated-bytes": float(torch.cuda.max_memory_allocated()),
            "mem-reserved-bytes": float(torch.cuda.memory_reserved()),
        }
    import psutil

    return {"mem-rss-bytes": float(psutil.Process().memory_info().rss)}


class Reporter:
    def __init__(self, cfg, *, device: str, num_layers: int):
        self.cfg, self.device, self.num_layers = cfg, device, num_layers
        self.writer = None
        self.metrics = None
        if is_logging_rank():
            if cfg.logging.tensorboard_dir:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=cfg.logging.tensorboard_dir, max_queue=50)
            if cfg.logging.metrics_file:
                Path(cfg.logging.metrics_file).parent.mkdir(parents=True, exist_ok=True)
                self.metrics = open(cfg.logging.metrics_file, "a")
        self.start = time.time()

    def step(self, iteration: int, scalars: dict[str, float], samples: int, num_micro: int) -> None:
        """Write one training step; ``scalars`` uses Megatron names (``lm loss``, ``grad-norm``…)."""
        moe_line = get_moe_metrics_tracker().report(
            loss_scale=1.0 / num_micro,
            iteration=iteration,
            writer=self.writer,
            per_layer_logging=self.cfg.logging.per_layer_logging,
            num_layers=self.num_layers,
            force_initialize=False,
        )
        scalars = {**scalars, **memory_scalars(self.device)}
        if not is_logging_rank():
            return
        if self.writer is not None:
            for name, value in scalars.items():
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(name, value, iteration)
                    if name in ("lm loss", "learning-rate"):
                        self.writer.add_scalar(f"{name} vs samples", value, samples)
        if self.metrics is not None:
            self.metrics.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
            self.metrics.flush()
        if iteration % self.cfg.logging.log_interval == 0 or iteration == self.cfg.schedule.train_iters:
            t = scalars.get("iteration-time", 0.0) * 1000
            line = (
                f" iteration {iteration:8d}/{self.cfg.schedule.train_iters:8d} | consumed samples: {samples:10d} |"
                f" elapsed time per iteration (ms): {t:.1f} | learning rate: {scalars['learning-rate']:.6E} |"
                f" lm loss: {scalars['lm loss']:.6E} | grad norm: {scalars['grad-norm']:.3f} |"
                f" tokens/s: {scalars['throughput/tokens-per-sec']:.0f} |"
                f" throughput per GPU (TFLOP/s/GPU): {scalars['throughput']:.3f} |"
            )
            if scalars.get("mfu") is not None:
                line += f" MFU: {100 * scalars['mfu']:.1f}% |"
            if scalars.get("skipped"):
                line += " step skipped (non-finite) |"
            print(line + (f" {moe_line}" if moe_line else ""), flush=True)

    def validation(self, iteration: int, loss: float, pooled_loss: float, pool_size: int) -> None:
        """``loss``: plain top-k over all routed experts; ``pooled_loss``: with document pools of ``pool_size``."""
        if not is_logging_rank():
            return
        ppl, pooled_ppl = math.exp(min(20.0, loss)), math.exp(min(20.0, pooled_loss))
        if self.writer is not None:
            self.writer.add_scalar("lm loss validation", loss, iteration)
            self.writer.add_scalar("lm loss validation ppl", ppl, iteration)
            self.writer.add_scalar("lm loss validation pooled", pooled_loss, iteration)
            self.writer.add_scalar("lm loss validation pooled ppl", pooled_ppl, iteration)
        if self.metrics is not None:
            record = {"iteration": iteration, "lm loss validation": loss, "lm loss validation pooled": pooled_loss}
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        print(f" validation loss at iteration {iteration} | lm loss value: {loss:.6E} | lm loss PPL: {ppl:.6E} |"
              f" pooled (pool_eval={pool_size}) lm loss value: {pooled_loss:.6E} | pooled PPL: {pooled_ppl:.6E} |",
              flush=True)

    def message(self, text: str) -> None:
        if is_logging_rank():
            print(text, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()
