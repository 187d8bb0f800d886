"""``emo-pretrain`` with the CUDA-free harness applied (tests/cuda_free/cuda_shims.py). TESTS ONLY.

``torchrun --nproc-per-node 2 tests/cuda_free/cuda_free_cli.py --parallel.device=cuda ...`` runs the README's GPU
command line unmodified on CPU gloo ranks: the NCCL backend the GPU path asks for becomes gloo, everything else
is the product's code.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cuda_free.cuda_shims import cuda_free  # noqa: E402

if __name__ == "__main__":
    with cuda_free():
        from emo_plugin.cli.pretrain import main

        sys.exit(main())
