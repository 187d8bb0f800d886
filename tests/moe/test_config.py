"""Invalid EMO configurations are refused before anything is built, with the field named."""

import dataclasses

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.moe.config import EmoRouterConfig, EmoTransformerConfig
from tests.helpers import tiny_config


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(emo=dict(pool_min=1)), "emo.pool_min"),  # below moe_router_topk=2
        (dict(emo=dict(pool_eval=1)), "emo.pool_eval"),
        (dict(emo=dict(pool_min=6, pool_max=4)), "emo.pool_max"),
        (dict(emo=dict(num_shared_experts=-1)), "emo.num_shared_experts"),
        (dict(emo=dict(lb_coeff=-0.1)), "emo.lb_coeff"),
        (dict(emo=dict(lb_scope="per_token")), "emo.lb_scope"),
        (dict(emo=dict(num_inert_experts=8)), "emo.num_inert_experts"),
        (dict(expert_model_parallel_size=3), "expert_model_parallel_size"),
        (dict(moe_router_topk=9), "moe_router_topk"),
        (dict(mlp_chunks_for_training=2), "mlp_chunks_for_training"),
        (dict(overlap_moe_expert_parallel_comm=True), "overlap_moe_expert_parallel_comm"),
        (dict(cuda_graph_impl="transformer_engine"), "cuda_graph_impl"),
        (dict(moe_expert_capacity_factor=1.0), "moe_expert_capacity_factor"),
        (dict(moe_router_score_function="sigmoid"), "moe_router_score_function"),
        (dict(moe_aux_loss_coeff=0.01), "moe_aux_loss_coeff"),
        (dict(moe_z_loss_coeff=0.5), "moe_z_loss_coeff"),
        (dict(moe_shared_expert_intermediate_size=7), "moe_shared_expert_intermediate_size"),
        (dict(calculate_per_token_loss=True), "calculate_per_token_loss"),
        (dict(num_moe_experts=None), "num_moe_experts"),
        (dict(emo=dict(pool_min_per_layer=(2, 2, 2))), "emo.pool_min_per_layer"),  # 2 layers
        (dict(emo=dict(pool_max_per_layer=(8,))), "emo.pool_max_per_layer"),
        (dict(emo=dict(pool_min_per_layer=(2, 1))), "emo.pool_min_per_layer: layer 1 has pool_min 1"),
        (dict(emo=dict(pool_max_per_layer=(8, 1))), "emo.pool_max_per_layer: layer 1 has pool_max 1"),
        (dict(emo=dict(pool_min_per_layer=(9, 2))), "emo.pool_min_per_layer: layer 0 has pool_max 8"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        tiny_config(**overrides)


def test_derived_megatron_fields():
    config = tiny_config(emo=dict(num_shared_experts=2, z_loss_coeff=0.002, lb_scope="global_batch"))
    assert config.moe_shared_expert_intermediate_size == 2 * 16
    assert config.moe_z_loss_coeff == 0.002
    assert config.moe_router_pre_softmax
    assert config.moe_router_load_balancing_type == "global_aux_loss" and config.moe_aux_loss_coeff == 0.0
    # A copy with another EMO field is validated and derived again.
    micro_batch = dataclasses.replace(config, emo=dataclasses.replace(config.emo, lb_scope="micro_batch"))
    assert micro_batch.moe_router_load_balancing_type == "none"


def test_inert_experts_make_expert_parallel_divisible():
    config = tiny_config(num_moe_experts=8, expert_model_parallel_size=4, emo=dict(num_inert_experts=1))
    assert config.num_selectable_experts == 7


def test_config_without_routing_recipe_is_refused():
    # The recipe has no defaults of its own: it comes from a model record.
    config = tiny_config()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init and f.name != "emo"}
    with pytest.raises(ConfigError, match="emo is not set"):
        EmoTransformerConfig(**fields)
    with pytest.raises(TypeError, match="pool_min"):
        EmoRouterConfig(pool_max=8)


def test_per_layer_pool_ranges_replace_the_single_range_layer_by_layer():
    """Megatron's layer numbers are 1-based; a list replaces its scalar, the other bound stays the scalar."""
    emo = tiny_config(emo=dict(pool_min=2, pool_max=8, pool_min_per_layer=(8, 3), pool_max_per_layer=(8, 5))).emo
    assert (emo.pool_range(1), emo.pool_range(2)) == ((8, 8), (3, 5))
    only_min = tiny_config(emo=dict(pool_min=2, pool_max=8, pool_min_per_layer=(8, 3))).emo
    assert (only_min.pool_range(1), only_min.pool_range(2)) == ((8, 8), (3, 8))
    single = tiny_config(emo=dict(pool_min=2, pool_max=6)).emo
    assert single.pool_range(1) == single.pool_range(2) == single.pool_range(None) == (2, 6)
    with pytest.raises(ValueError, match="per-layer pool ranges need the router's layer number"):
        emo.pool_range(None)


@pytest.mark.parametrize("emo,config,message", [
    (dict(pool_max_ranks=1), {}, "pool_rank_groups"),
    (dict(pool_rank_groups=2), {}, "pool_max_ranks"),
    (dict(pool_max_ranks=2, pool_rank_groups=2), {}, "restricts nothing"),
    (dict(pool_max_ranks=1, pool_rank_groups=3), {}, "does not divide num_moe_experts=8"),
    (dict(pool_max_ranks=1, pool_rank_groups=4, pool_min=3), {}, "holds 2 selectable experts"),
    (dict(pool_max_ranks=1, pool_rank_groups=2, pool_min=2, num_inert_experts=2), {"moe_router_topk": 2},
     None),
    (dict(pool_max_ranks=1, pool_rank_groups=2, pool_min=3, num_inert_experts=2), {}, "holds 2 selectable"),
    (dict(pool_max_ranks=1, pool_rank_groups=4, pool_min=2, pool_min_per_layer=(2, 3)), {}, "pool_min_per_layer"),
])
def test_rank_limit_validation_refuses_limits_that_cannot_hold_the_pool(emo, config, message):
    if message is None:
        assert tiny_config(emo=emo, **config).rank_group_capacities() == [4, 2]
        return
    with pytest.raises(ConfigError, match=message):
        tiny_config(emo=emo, **config)


def test_rank_limit_validation_refuses_groups_that_straddle_ranks():
    with pytest.raises(ConfigError, match="straddles ranks"):
        tiny_config(emo=dict(pool_max_ranks=1, pool_rank_groups=4, num_inert_experts=4),
                    num_moe_experts=12, expert_model_parallel_size=3)
