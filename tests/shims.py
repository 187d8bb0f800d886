"""CPU shims for Megatron code paths that hard-code CUDA. TESTS ONLY.

Applied inside the spawned worker processes of ``tests/parallel/harness.py`` (never in library code, never in
the pytest process itself):

* ``torch.cuda.current_device() -> "cpu"``: Megatron allocates communication buffers "on the current device"
  (``tensor_parallel.mappings``, TP/EP gathers).
* ``torch.cuda.synchronize`` no-op: dist_checkpointing (``FileSystemWriterAsync``).
* no-op CUDA RNG tracker: attention dropout forks it (``DotProductAttention.forward``).
* ``_get_cuda_rng_state``/``_set_cuda_rng_state`` on the host RNG: recompute (``CheckpointFunction``) saves
  and restores the CUDA RNG state.
"""

from __future__ import annotations

import contextlib

import torch


class _NoCudaRngTracker:
    def fork(self, name=None):
        return contextlib.nullcontext()

    def is_initialized(self):
        return True

    def add(self, name, seed):
        pass

    def get_states(self):
        return {}

    def set_states(self, states):
        pass

    def reset(self):
        pass


def apply_cpu_shims() -> None:
    import megatron.core.tensor_parallel.random as megatron_random

    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *args, **kwargs: None
    megatron_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    megatron_random._set_cuda_rng_state = lambda *args, **kwargs: None
    megatron_random._CUDA_RNG_STATE_TRACKER = _NoCudaRngTracker()
    megatron_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
