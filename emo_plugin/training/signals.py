"""Stop requests: SIGTERM or SIGUSR1 (Slurm's ``--signal`` may send either), or the run-time budget.

The handlers only set a flag. Once per step, ``agreed()`` folds the flag and the budget into one small
all-reduce (MAX) that the loop already pays for, so every rank stops, saves and exits at the same iteration.
Handlers are installed before the model is built, so a signal during start-up is not lost either.
"""

from __future__ import annotations

import signal
import time

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    def __init__(self, budget_minutes: float | None = None, start: float | None = None) -> None:
        self.signal_name: str | None = None
        self.budget_seconds = None if budget_minutes is None else budget_minutes * 60.0
        self.start = time.monotonic() if start is None else start
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def _over_budget(self) -> bool:
        return self.budget_seconds is not None and time.monotonic() - self.start >= self.budget_seconds

    def agreed(self) -> str | None:
        """Why to stop now, the same on every rank ('SIGTERM/SIGUSR1 received', 'run-time budget ...'), or None."""
        flags = torch.tensor([1 if self.signal_name else 0, 1 if self._over_budget() else 0])
        if dist.is_initialized():
            on_device = flags if dist.get_backend() == "gloo" else flags.cuda()
            dist.all_reduce(on_device, op=dist.ReduceOp.MAX)
            flags = on_device.cpu()
        signalled, over_budget = flags.tolist()
        if signalled:
            if self.signal_name:
                return f"{self.signal_name} received"
            return "SIGTERM/SIGUSR1 received (on another rank)"
        if over_budget:
            return f"run-time budget schedule.exit_duration_minutes={self.budget_seconds / 60:g} reached"
        return None

    def restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
