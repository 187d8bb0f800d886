"""A checkpoint saved under EP2 or TP2 (+SP) exports exactly the tensors of the 1-rank checkpoint."""

import pytest
import torch

from emo_plugin.convert import export_to_hf
from emo_plugin.convert.hf_weights import HfWeights
from tests.convert.checkpoint_workers import save_under_layout
from tests.parallel.harness import Layout, run_ranks

LAYOUTS = {"ep2": Layout(ep=2), "tp2_sequence_parallel": Layout(tp=2)}


@pytest.mark.parametrize("name", LAYOUTS)
def test_multi_rank_checkpoint_exports_like_single_rank(name, megatron_model, hf_folder, tmp_path):
    full_state = {n: p.detach().clone() for n, p in megatron_model.named_parameters()}
    run_ranks(save_under_layout, 2, LAYOUTS[name], root=str(tmp_path / "ckpt"), full_state=full_state)
    assert len(list((tmp_path / "ckpt").glob("iter_*/__*_0.distcp"))) == 2  # both ranks wrote shards
    export_to_hf(tmp_path / "ckpt", tmp_path / "hf", dtype="fp32", progress=False)
    single, parallel = HfWeights(hf_folder), HfWeights(tmp_path / "hf")
    assert sorted(single.names()) == sorted(parallel.names())
    for tensor in single.names():
        assert torch.equal(single.get(tensor), parallel.get(tensor)), tensor
