"""The CUDA-free cases (``pytest -m cuda_free``): the product's GPU path on CPU gloo ranks.

Every case starts its own ranks through tests/parallel/harness.py (forkserver workers, ~1 s each) or the CLI
runner of tests/training/conftest.py; the ranks enter ``cuda_shims.cuda_free()`` themselves.
"""

import torch

from tests.training.conftest import seed_run  # noqa: F401  (session fixture: a finished tiny run)

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    collect_ignore_glob = ["test_*.py"]  # the harness needs torch.distributed with the gloo backend

