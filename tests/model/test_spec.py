"""The decoder block spec (``emo_plugin/model/spec.py``): Megatron's spec with EMO routing in every MoE layer."""

import functools
import importlib.util

import pytest

from emo_plugin.model.spec import emo_decoder_block_spec
from emo_plugin.moe.layer import EmoMoELayer
from emo_plugin.moe.router import EmoRouter
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
HAVE_TE = importlib.util.find_spec("transformer_engine") is not None


@pytest.mark.parametrize(
    "use_te",
    [False, pytest.param(True, marks=pytest.mark.skipif(not HAVE_TE, reason="TE spec needs Transformer Engine (GPU)"))],
)
@pytest.mark.parametrize("grouped_gemm", [False, True])
def test_spec_puts_emo_router_in_every_moe_layer(use_te, grouped_gemm):
    config = tiny_config(num_layers=4, moe_layer_freq=[1, 0, 1, 1], moe_grouped_gemm=grouped_gemm)
    block = emo_decoder_block_spec(config, use_transformer_engine=use_te)
    mlps = [spec.submodules.mlp for spec in block.layer_specs]
    moe = [m for m in mlps if isinstance(m, functools.partial) and m.func is EmoMoELayer]
    assert len(moe) == 3
    for mlp in moe:
        assert mlp.keywords["submodules"].router is EmoRouter
        assert mlp.keywords["submodules"].shared_experts is not None
