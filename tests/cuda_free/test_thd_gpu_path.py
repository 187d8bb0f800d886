"""Intra-document attention on the GPU path: ``MegatronBackend`` with thd-packed micro-batches (1 rank, and PP2
1F1B, whose p2p buffers take the packed length) equals the host backend with the dense intra-document mask,
from the same initial weights. Tolerances as in test_gpu_path_equivalence.py: losses rtol 1e-6, grad norms
rtol 1e-5, parameters after two steps atol 1e-4."""

from __future__ import annotations

import pytest

from tests.cuda_free.backend_runs import train_run
from tests.cuda_free.test_gpu_path_equivalence import assert_equivalent
from tests.cuda_free.thd_runs import intra_document_run
from tests.parallel.harness import run_ranks

pytestmark = pytest.mark.cuda_free
STEPS = 2


@pytest.fixture(scope="module")
def reference():
    weights = run_ranks(train_run, 1, device="cpu", overrides={}, steps=0)[0]["initial"]
    host = run_ranks(intra_document_run, 1, device="cpu", overrides={}, steps=STEPS, full_state=weights)
    assert not host[0]["packed"] and host[0]["shape"] == (2, 32)
    return weights, host


@pytest.mark.parametrize("pipeline", [1, 2], ids=["1rank", "pp2"])
def test_thd_packed_gpu_path_equals_the_dense_mask_host_path(reference, pipeline):
    weights, host = reference
    results = run_ranks(intra_document_run, pipeline, device="cuda", steps=STEPS, full_state=weights,
                        overrides={"parallel.pipeline_model_parallel_size": pipeline})
    assert all(r["packed"] and r["shape"] == (1, 64) for r in results)  # micro-batch 2 × 32 as one thd row
    assert [r["pp_rank"] for r in results] == list(range(pipeline))
    assert_equivalent(results, host)
