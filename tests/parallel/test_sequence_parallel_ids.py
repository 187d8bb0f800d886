"""TP2 + sequence parallelism at the EmoMoELayer level, given *full-length* routing ids.

GPTModel scatters the ids itself on the first pipeline stage, so the layer's own slicing (``_local_chunk``)
only runs on later stages; here the layer gets the full ids directly and must route each rank's sequence
chunk exactly as the 1-rank layer routes that chunk of the full sequence. Documents span both chunks
(EOD probability 0.1 over 32 positions), so a rank that sliced the wrong chunk would see other segments
and salts, hence other pool sizes and pools.
"""

import torch

from tests.parallel.harness import (
    SINGLE,
    Layout,
    RouterCapture,
    build_emo_moe_layer,
    emo_config,
    load_from_single_rank,
    moe_layer_inputs,
    parameters,
    run_ranks,
)

SEQ, BATCH, HIDDEN = 32, 2, 32
CONFIG = {"emo": {"pool_min": 2, "pool_max": 4}}


def sp_layer_forward(layout, full_state=None):
    from megatron.core import parallel_state as ps

    torch.manual_seed(11)
    layer = build_emo_moe_layer(emo_config(layout, **CONFIG))
    if full_state is not None:
        load_from_single_rank(layer, full_state)
    capture = RouterCapture(layer)
    hidden, ids, _ = moe_layer_inputs(SEQ, BATCH, HIDDEN, seed=4)
    seq_index = torch.arange(SEQ).chunk(layout.tp)[ps.get_tensor_model_parallel_rank()]
    with torch.no_grad():
        output, _ = layer.train()(hidden[seq_index].contiguous(), padding_mask=ids)
        try:  # 1.5× the sequence: neither this rank's chunk nor the full length
            layer(hidden[seq_index].contiguous(), padding_mask=torch.cat([ids, ids[:, : SEQ // 2]], dim=1))
            wrong_length_error = None
        except ValueError as error:
            wrong_length_error = str(error)
    result = dict(maps=capture.maps[1][0], ids=capture.ids[1][0], seq_index=seq_index, output=output, full_ids=ids)
    result["wrong_length_error"] = wrong_length_error
    if full_state is None:
        result["state"] = parameters(layer)
    return result


def test_tp2_sp_layer_slices_full_length_ids_to_its_own_chunk():
    (ref,) = run_ranks(sp_layer_forward, 1, SINGLE)
    results = run_ranks(sp_layer_forward, 2, Layout(tp=2), full_state=ref["state"])

    ids = ref["full_ids"]
    assert set(ids[:, : SEQ // 2].flatten().tolist()) & set(ids[:, SEQ // 2 :].flatten().tolist()), (
        "test data must have a document spanning both sequence chunks"
    )
    for rank, r in enumerate(results):
        chunk = r["seq_index"]
        assert torch.equal(r["ids"], ids.T[chunk]), f"rank {rank}: router got another chunk's ids"
        assert torch.equal(r["maps"], ref["maps"][chunk]), f"rank {rank}: routing differs from the 1-rank layer"
        torch.testing.assert_close(r["output"], ref["output"][chunk], rtol=1e-5, atol=1e-6)
        local = SEQ // 2
        expected = f"routing ids cover {3 * local} positions per sequence but this MoE layer sees {local}"
        assert r["wrong_length_error"] == expected, f"rank {rank}"
