"""Multi-process tests: each test starts its own gloo ranks through tests/parallel/harness.py."""

import torch

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    collect_ignore_glob = ["test_*.py"]  # the harness needs torch.distributed with the gloo backend
