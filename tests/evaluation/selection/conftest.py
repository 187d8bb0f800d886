"""Fixtures: an exported tiny EMO HF folder (random weights, real tokenizer), the model and calibration documents
(tiny_hf_folder.py), a pruned subset of it (pruned_subset.py), and random token documents."""

import pytest
import torch

from tests.evaluation.selection.pruned_subset import pruned  # noqa: F401
from tests.evaluation.selection.tiny_hf_folder import documents_file, hf_folder, model  # noqa: F401


@pytest.fixture
def documents():
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(3, 64, (1, n), generator=gen) for n in (12, 20, 7)]
