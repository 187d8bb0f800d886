"""``emo-pretrain-megatron`` with the CUDA-free harness applied (tests/cuda_free/cuda_shims.py). TESTS ONLY.

``torchrun --nproc-per-node 2 tests/cuda_free/megatron_lm_cli.py <Megatron-LM flags>`` runs Megatron-LM's
``pretrain`` loop with EMO on CPU gloo ranks: the NCCL backend becomes gloo, ``torch.cuda.is_available()``
answers True (Megatron-LM's ``initialize_megatron`` asserts it), everything else is Megatron-LM's and the product's.
"""

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cuda_free.cuda_shims import cuda_free  # noqa: E402

if __name__ == "__main__":
    with cuda_free():
        import torch

        torch.cuda.is_available = lambda: True  # initialize_megatron asserts it
        # ... but torch itself must still see no accelerator (Adam's graph-capture check, data-loader pinning)
        torch.accelerator.current_accelerator = lambda check_available=False: None
        # validate_args reads the GPU architecture (Hopper, as tests/cuda_free/cuda_shims.py's capability says)
        torch.cuda.get_device_properties = lambda *a, **k: types.SimpleNamespace(major=9, minor=0, name="host")
        from emo_plugin.cli.pretrain_megatron import main

        sys.exit(main())
