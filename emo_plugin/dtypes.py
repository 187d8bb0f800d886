"""The dtype names the tools accept (``--dtype fp32|bf16``) and the torch dtypes they stand for, in one map."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
