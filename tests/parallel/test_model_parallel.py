"""TP2 + sequence parallel, EP2 and the 4-rank TP2×EP2 mix: a GPTModel step equals the 1-rank step, with plain
document pools and with rank-limited ones.

Allgather dispatcher only: Megatron's alltoall dispatcher creates a CUDA stream in its constructor
(``MoEAlltoAllTokenDispatcher.__init__``) and cannot be built on CPU.
"""

import pytest

from tests.parallel.harness import Layout, assert_step_matches_reference, documents_batch, gpt_train_step, run_ranks
from tests.parallel.test_rank_limited_pools import LIMIT

LAYOUTS = {
    "tp2_sequence_parallel": (Layout(tp=2), 2),
    "ep2": (Layout(ep=2), 2),  # two data-parallel ranks, four experts each
    "tp2_x_ep2": (Layout(tp=2, ep=2), 4),
}


POOLS = {"document_pools": {}, "rank_limited_pools": LIMIT}


@pytest.fixture(scope="module", params=sorted(POOLS))
def reference(request):
    tokens, ids, loss_mask = documents_batch(4, 16, seed=2)
    data = dict(tokens=tokens, ids=ids, loss_mask=loss_mask, config=POOLS[request.param])
    (result,) = run_ranks(gpt_train_step, 1, **data)
    return data, result


@pytest.mark.parametrize("name", LAYOUTS)
def test_gpt_step_equals_single_rank(name, reference):
    data, ref = reference
    layout, world_size = LAYOUTS[name]
    results = run_ranks(gpt_train_step, world_size, layout, full_state=ref["state"], full_grads=ref["grads"], **data)
    assert_step_matches_reference(results, ref)
    if layout.tp > 1:  # each TP rank routed only its own half of the sequence
        assert all(len(r["seq_index"]) == data["tokens"].shape[1] // 2 for r in results)
