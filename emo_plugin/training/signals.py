"""SIGTERM → finish the current step, save, exit 0 (Slurm sends SIGTERM before the kill at time limit / preemption).

The handler only sets a flag; the loop agrees on it across ranks (one all-reduce per step) so every rank
saves at the same iteration.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        flag = torch.tensor([1 if self.requested else 0])
        if dist.is_initialized() and dist.get_backend() == "gloo":
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        elif dist.is_initialized():
            flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
