"""``EmoMoELayer`` (``emo_plugin/moe/layer.py``): the routing ids it peels off ``padding_mask``. That every router of
a model sees its forward's ids is ``tests/model/test_build.py``; sequence parallelism and recompute are
``tests/parallel``."""

import pytest
import torch

from emo_plugin.moe.routing_ids import build_routing_ids
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("megatron_single_rank")
BATCH = 2


def test_moe_layer_refuses_routing_ids_of_another_length():
    """Without sequence parallelism the ids must cover exactly the layer's positions; twice as many is an error,
    not a silently taken first half."""
    from tests.parallel.harness import build_emo_moe_layer

    torch.manual_seed(2)
    config = tiny_config()
    layer = build_emo_moe_layer(config)
    ids = build_routing_ids(
        tokens_BS=torch.ones(BATCH, 16, dtype=torch.long), eod_token_id=0, max_documents_per_sequence=16
    )
    with pytest.raises(ValueError, match="routing ids cover 16 positions per sequence but this MoE layer sees 8"):
        layer(torch.randn(8, BATCH, config.hidden_size), padding_mask=ids)
