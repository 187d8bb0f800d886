"""A model record as Megatron's ``EmoTransformerConfig`` (``emo_plugin/model/megatron_config.py``)."""

import pytest
import torch

from emo_plugin.model.megatron_config import transformer_config
from emo_plugin.model.sizes import SIZES


@pytest.mark.parametrize("name", list(SIZES))
def test_registry_records_build_valid_megatron_configs(name):
    record = SIZES[name]
    config = transformer_config(record, tensor_model_parallel_size=1)
    assert (config.num_layers, config.hidden_size, config.num_query_groups) == (
        record.num_layers, record.hidden_size, record.num_query_groups)
    assert (config.num_moe_experts, config.moe_router_topk, config.moe_ffn_hidden_size) == (
        record.num_moe_experts, record.moe_router_topk, record.moe_ffn_hidden_size)
    assert config.num_selectable_experts == record.num_selectable_experts
    assert config.moe_shared_expert_intermediate_size == record.num_shared_experts * record.moe_ffn_hidden_size
    assert config.layernorm_epsilon == record.norm_epsilon and config.moe_z_loss_coeff == record.z_loss_coeff
    emo = config.emo
    assert (emo.pool_min, emo.pool_max, emo.pool_eval, emo.lb_coeff) == (
        record.pool_min, record.pool_max, record.pool_eval, record.lb_coeff)
    assert emo.max_documents_per_sequence == record.max_documents_per_sequence


def test_overrides_and_router_settings_reach_the_megatron_config():
    config = transformer_config(SIZES["tiny"], router=dict(lb_scope="global_batch", seed=7),
                                expert_model_parallel_size=2, params_dtype=torch.float32)
    assert config.expert_model_parallel_size == 2 and config.emo.seed == 7
    assert config.moe_router_load_balancing_type == "global_aux_loss"
