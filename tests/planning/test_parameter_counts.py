"""The planner's parameter counts equal the built model's, exactly, for every named size and several layouts.

Small models are built for real on gloo ranks; the 14B sizes are built on the meta device (shapes, no memory).
"""

from __future__ import annotations

import pytest

from emo_plugin.model.sizes import SIZES
from emo_plugin.planning.parameters import stage_parameters
from emo_plugin.run.layout import Layout
from tests.helpers import run_record
from tests.parallel.harness import Layout as HarnessLayout
from tests.parallel.harness import run_ranks
from tests.planning.workers import built_parameter_counts, run_config

EP_PADDING = {"model.num_moe_experts": 128, "emo.num_inert_experts": 1}  # 127 routed experts + 1 inert slot


def _planned(spec: dict, layout: HarnessLayout, world_size: int, stage: int) -> dict:
    cfg = run_config(spec["size"], layout, spec.get("overrides"))
    plan_layout = Layout.from_config(cfg, world_size)
    count = stage_parameters(run_record(cfg), spec["vocab"], plan_layout, stage)
    return {"stage": stage, "dense": count.dense, "expert": count.expert}


def _check(layout: HarnessLayout, world_size: int, specs: list[dict]) -> None:
    per_rank = run_ranks(built_parameter_counts, world_size, layout, timeout=240, specs=specs)
    for rank, results in enumerate(per_rank):
        for spec, built in zip(specs, results):
            assert built == _planned(spec, layout, world_size, built["stage"]), f"rank {rank}, {spec}"


def test_every_named_size_on_one_rank():
    specs = [{"size": name, "vocab": SIZES[name].vocab_size, "meta": SIZES[name].num_layers > 8} for name in SIZES]
    _check(HarnessLayout(), 1, specs)


@pytest.mark.parametrize(
    "layout, world_size",
    [(HarnessLayout(tp=2), 2), (HarnessLayout(ep=2), 2), (HarnessLayout(pp=2), 2), (HarnessLayout(tp=2, ep=2), 4)],
    ids=["tp2_sp", "ep2", "pp2", "tp2_ep2"],
)
def test_parallel_layouts(layout, world_size):
    specs = [{"size": "tiny", "vocab": 4096, "meta": False}]
    if layout.tp > 1 and layout.ep > 1:  # the flagship shape, padded for EP, split over TP, expert-TP and EP
        specs.append({"size": "emo_1b14b", "vocab": 100_352, "meta": True, "overrides": EP_PADDING})
    _check(layout, world_size, specs)
