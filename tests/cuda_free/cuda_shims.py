"""Run the product's ``parallel.device=cuda`` path on CPU gloo ranks. TESTS ONLY, never imported by emo_plugin.

``MegatronBackend`` drives Megatron-Core's CUDA machinery (DDP grad buffers, distributed optimizer, pipeline
schedules, alltoall dispatcher, ``finalize_model_grads``). None of it computes anything CUDA-specific; it
allocates "on the current device", moves tensors with ``.cuda()``, orders work on streams and type-checks
parameters as ``torch.cuda.*Tensor``. ``cuda_free()`` makes exactly those calls land on the CPU, so the same
Python code runs unmodified over gloo (which has reduce-scatter, all-gather-into-tensor, coalescing, uneven
all-to-all and batched p2p), and its numbers can be compared against the host backend:

* ``init_process_group("nccl")`` becomes gloo;
* ``torch.cuda`` stubs: one device 0 (``current_device``/``set_device``/``device_count``), no-op
  ``synchronize``/``_lazy_init``/``empty_cache``, the CUDA RNG state and seed calls on the host RNG, zero memory
  statistics, and fake ``Stream``/``Event``/``current_stream``/``stream()`` (CPU ops run in program order);
* Megatron's CUDA RNG tracker replaced by the no-op tracker of ``tests/shims.py`` (initialisation and dropout
  then draw from the host RNG);
* ``CudaAsCpu`` (a ``TorchFunctionMode``): ``device="cuda"``/``cuda:N``/integer devices become CPU,
  ``.cuda()``/``.to("cuda")``/``pin_memory`` are no-ops (``Tensor.record_stream`` is patched to one: the argument
  parser rejects a fake stream before any mode sees the call), ``Tensor.type()`` reports
  ``torch.cuda.<T>Tensor`` (Megatron's optimizers check it) and ``Tensor.is_cuda`` answers ``True``;
* ``CudaAllocationsToCpu`` (a ``TorchDispatchMode``): the backstop for factory calls that bypass the function
  mode, such as the allocations inside custom autograd backwards (``_AllToAll.backward``);
* the alltoall dispatcher's split sizes stay host values: Megatron moves them to the host only when
  ``tensor.is_cuda``, so with ``is_cuda`` reported true they are converted the way Megatron converts them on GPU.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_CPU = torch.device("cpu")
_IS_CUDA = torch.Tensor.is_cuda.__get__  # a fresh method-wrapper per access: compare with ==, not is


def _is_cuda_device(device) -> bool:
    if isinstance(device, int) and not isinstance(device, bool):
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


def _to_cpu(device):
    return _CPU if _is_cuda_device(device) else device


class _Stream:
    """A CUDA stream on the host: work already runs in program order, so every wait is a no-op."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass

    def wait_event(self, event):
        pass

    def record_event(self, event=None):
        return event or _Event()

    def synchronize(self):
        pass

    def query(self):
        return True

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


class _Event:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None):
        pass

    def wait(self, stream=None):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


_DEFAULT_STREAM = _Stream()


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.set_device = lambda *a, **k: None
    cuda.device_count = lambda: 1
    cuda.synchronize = lambda *a, **k: None
    cuda._lazy_init = lambda: None
    cuda.empty_cache = lambda: None
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: None
    cuda.manual_seed = lambda seed: None
    cuda.manual_seed_all = lambda seed: None
    cuda.random.get_rng_state = cuda.get_rng_state
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved"):
        setattr(cuda, name, lambda *a, **k: 0)
    cuda.reset_peak_memory_stats = lambda *a, **k: None
    cuda.memory_stats = lambda *a, **k: {}
    cuda.Stream = _Stream
    cuda.Event = _Event
    cuda.current_stream = lambda *a, **k: _DEFAULT_STREAM
    cuda.default_stream = lambda *a, **k: _DEFAULT_STREAM
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.is_current_stream_capturing = lambda: False
    cuda.get_device_capability = lambda *a, **k: (9, 0)
    cuda.get_device_name = lambda *a, **k: "cuda-free host"
    # the argument parser rejects a fake stream before any mode sees the call, so patch the method itself
    torch.Tensor.record_stream = lambda self, stream: None


class CudaAsCpu(TorchFunctionMode):
    """Megatron's CUDA placements, moves and type checks, answered on the CPU."""

    _NO_OPS = {torch.Tensor.cuda, torch.Tensor.pin_memory}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._NO_OPS:
            return args[0]
        if func == _IS_CUDA:
            return True
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return "torch.cuda." + func(*args).rsplit(".", 1)[-1]
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        if func is torch.Tensor.to:
            args = tuple(_to_cpu(a) for a in args)
        elif func is torch.device and args and _is_cuda_device(args[0]):
            return _CPU
        return func(*args, **kwargs)


class CudaAllocationsToCpu(TorchDispatchMode):
    """Backstop below autograd: factory ops that still name a CUDA device allocate on the CPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        return func(*args, **kwargs)


def _gloo_for_nccl() -> None:
    """A launch that asks for NCCL (the GPU path's ``init_process_group``) gets gloo, which has every collective
    Megatron uses here (reduce-scatter, all-gather into tensor, coalescing, uneven all-to-all, batched p2p)."""
    init = torch.distributed.init_process_group
    if getattr(init, "cuda_free", False):
        return

    def init_process_group(backend=None, *args, **kwargs):
        return init("gloo" if backend in (None, "nccl") else backend, *args, **kwargs)

    init_process_group.cuda_free = True
    torch.distributed.init_process_group = init_process_group


def apply_cuda_free_shims() -> None:
    """Process-wide patches (torch.cuda stubs, Megatron's RNG tracker, gloo for NCCL); call in a rank process."""
    from tests.shims import apply_cpu_shims

    apply_cpu_shims()
    _patch_torch_cuda()
    _gloo_for_nccl()


@contextlib.contextmanager
def cuda_free():
    """Apply the patches and run the enclosed code with CUDA placements answered on the CPU."""
    apply_cuda_free_shims()
    with CudaAllocationsToCpu(), CudaAsCpu():
        yield
