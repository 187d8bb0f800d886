"""The weight map is a bijection between a real host GPTModel's checkpoint slices and EmoForCausalLM's
parameters, its layouts invert each other, and docs/architecture.md shows the map as it is."""

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch

from emo_plugin.convert import layouts, weight_map
from emo_plugin.convert.hf_config import hf_config_kwargs
from emo_plugin.convert.import_hf import host_slices
from tests.convert.checkpoint_workers import TINY, random_model

ARCHITECTURES = {
    "one shared": TINY,
    "two shared, one inert": dataclasses.replace(TINY, num_shared_experts=2, num_inert_experts=1),
    "no shared": dataclasses.replace(TINY, num_shared_experts=0),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch_and_model(request, megatron_single_rank):
    arch = ARCHITECTURES[request.param]
    return arch, random_model(arch)


def test_every_megatron_slice_is_exactly_one_unit_of_exactly_one_row(arch_and_model):
    arch, model = arch_and_model
    slices = Counter((key, index) for _, key, index, _ in host_slices(model))
    units = Counter((unit.row.megatron, unit.index) for unit in weight_map.units(arch))
    assert max(slices.values()) == 1 and max(units.values()) == 1
    assert slices.keys() == units.keys()
    keys = {key for key, _ in slices}
    assert all(sum(row.megatron == key for row in weight_map.ROWS) == 1 for key in keys)
    inert = [unit for unit in weight_map.units(arch) if not unit.hf_names]
    padding = range(arch.num_selectable_experts, arch.num_moe_experts)
    assert {unit.index for unit in inert} == {(i, e) for i in range(arch.num_layers) for e in padding}


def test_every_hf_parameter_is_exactly_one_tensor_of_exactly_one_unit(arch_and_model):
    from emo_plugin.hf import EmoConfig, EmoForCausalLM

    arch, _ = arch_and_model
    hf_model = EmoForCausalLM(EmoConfig(**hf_config_kwargs(arch)))
    expected = {name: tuple(p.shape) for name, p in hf_model.named_parameters()}
    mapped = Counter(name for unit in weight_map.units(arch) for name in unit.hf_names)
    assert max(mapped.values()) == 1
    assert mapped.keys() == expected.keys()
    shapes = {n: s for unit in weight_map.units(arch) for n, s in zip(unit.hf_names, unit.hf_shapes)}
    assert shapes == expected


def test_the_shared_experts_are_the_last_hf_slots(arch_and_model):
    arch, _ = arch_and_model
    R, S = arch.num_selectable_experts, arch.num_shared_experts
    shared = [u for u in weight_map.units(arch) if u.row.scope is weight_map.Scope.SHARED and u.index == (1,)]
    expected = {f"model.layers.1.mlp.experts.{R + s}.{p}_proj.weight" for s in range(S) for p in ("gate", "up", "down")}
    assert {n for u in shared for n in u.hf_names} == expected


def test_layouts_split_and_merge_are_inverse(arch_and_model):
    arch, model = arch_and_model
    for _, key, index, tensor in host_slices(model):
        unit = next(u for u in weight_map.units(arch) if (u.row.megatron, u.index) == (key, index))
        if not unit.hf_names:
            continue
        parts = unit.row.layout.split(tensor, arch, unit.slots)
        assert [tuple(p.shape) for p in parts] == list(unit.hf_shapes), key
        if unit.row is weight_map.ROUTER:  # inert and shared rows are zeros by construction
            tensor = torch.cat(
                [tensor[: arch.num_selectable_experts], tensor.new_zeros(arch.num_inert_experts, arch.hidden_size)]
            )
        assert torch.equal(unit.row.layout.merge(parts, arch, unit.slots), tensor), key


def test_qkv_layout_groups_the_heads_per_query_group():
    """4 heads in 2 groups, head_dim 8: Megatron rows are [q0 q1 k0 v0 | q2 q3 k1 v1] (one block per head)."""
    blocks = torch.arange(8).repeat_interleave(8)[:, None].float().expand(64, 32)
    q, k, v = layouts.QKV.split(blocks, TINY, 1)
    assert q[::8, 0].tolist() == [0, 1, 4, 5] and k[::8, 0].tolist() == [2, 6] and v[::8, 0].tolist() == [3, 7]


def test_the_architecture_doc_shows_the_weight_map():
    text = Path("docs/architecture.md").read_text()
    section = text.split("## Weight map\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == weight_map.markdown_table()


def test_pruning_names_are_the_hf_models_router_and_expert_slot_parameters():
    from emo_plugin.hf import EmoConfig, EmoForCausalLM

    arch = ARCHITECTURES["two shared, one inert"]
    parameters = {name for name, _ in EmoForCausalLM(EmoConfig(**hf_config_kwargs(arch))).named_parameters()}
    for layer in range(arch.num_layers):
        assert weight_map.hf_router_name(layer) == f"model.layers.{layer}.mlp.gate.weight"
        for slot in range(arch.num_selectable_experts + arch.num_shared_experts):
            expected = [f"model.layers.{layer}.mlp.experts.{slot}.{p}_proj.weight" for p in ("gate", "up", "down")]
            assert weight_map.hf_expert_names(layer, slot) == expected
            assert set(expected) <= parameters
        assert weight_map.hf_layer_of(weight_map.hf_router_name(layer)) == layer
    assert weight_map.hf_layer_of("model.embed_tokens.weight") is None
