"""PP2×DP2 at the EmoMoELayer level: the router's cross-rank sums and averages use the right process groups.

Each pipeline stage holds one MoE layer (global layer numbers 1 and 2), each data-parallel rank half of the
batch. The expert counts must be summed over the stage's data ranks only: the world group also holds the other
stage, whose layer routes differently. The metrics Megatron's tracker reports (after its pipeline, sum and
average reductions) must equal a 1-rank layer's: the load-balancing loss and the statistics of global counts
on the whole batch, the per-rank statistics (pool size, entropies) as the mean of each half routed alone.
"""

import pytest
import torch

from tests.parallel.harness import (
    SINGLE,
    Layout,
    assert_close_dicts,
    build_emo_moe_layer,
    clear_metrics,
    emo_config,
    expected_grads,
    gradients,
    load_from_single_rank,
    moe_layer_inputs,
    parameters,
    reduce_gradients_like_megatron,
    run_ranks,
)

SEQ, HIDDEN, DATA_RANKS, ROWS_PER_RANK, LAYERS = 16, 32, 2, 2, 2
# Megatron's z-loss is a per-rank mean; off, so that the gradients compare exactly.
CONFIG = {"emo": {"z_loss_coeff": 0.0}}
GLOBAL_COUNT_METRICS = ("load_balancing_loss", "emo_fraction_experts_used", "emo_load_imbalance")
PER_RANK_METRICS = ("emo_pool_size", "emo_token_entropy", "emo_doc_entropy")


def inputs():
    """Hidden states [s, b, h], routing ids [b, s] and a loss weight [s, b, h] of the whole batch."""
    return moe_layer_inputs(SEQ, DATA_RANKS * ROWS_PER_RANK, HIDDEN, seed=5, eod_probability=0.2)


def recorded(layer_number: int) -> dict[str, torch.Tensor]:
    """The values this (single) rank recorded for one layer, before any cross-rank reduction."""
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    names = GLOBAL_COUNT_METRICS + PER_RANK_METRICS
    return {name: get_moe_metrics_tracker().metrics[name].values[layer_number - 1].clone() for name in names}


def single_rank_reference(layout):
    """Per layer: weights, gradients of the whole batch and the metrics each layer should report."""
    hidden, ids, weight = inputs()
    reference = {}
    for layer_number in range(1, LAYERS + 1):
        torch.manual_seed(layer_number)
        layer = build_emo_moe_layer(emo_config(layout, **CONFIG), layer_number)
        clear_metrics()
        (layer(hidden, padding_mask=ids)[0] * weight).sum().backward()
        whole = recorded(layer_number)
        halves = []
        for rows in torch.arange(hidden.shape[1]).chunk(DATA_RANKS):
            clear_metrics()
            layer(hidden[:, rows].contiguous(), padding_mask=ids[rows])
            halves.append(recorded(layer_number))
        per_rank = {name: torch.stack([h[name] for h in halves]) for name in PER_RANK_METRICS}
        metrics = {name: whole[name] for name in GLOBAL_COUNT_METRICS}
        metrics.update({name: values.mean() for name, values in per_rank.items()})
        reference[layer_number] = dict(
            state=parameters(layer), grads=gradients(layer), metrics=metrics, per_rank=per_rank
        )
    return reference


class _Scalars:
    """A TensorBoard writer stand-in that keeps what the tracker writes."""

    def __init__(self):
        self.values = {}

    def add_scalar(self, name, value, iteration):
        self.values[name] = torch.as_tensor(value, dtype=torch.float32)


def pipeline_data_parallel_step(layout, reference):
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker

    layer_number = ps.get_pipeline_model_parallel_rank() + 1
    layer = build_emo_moe_layer(emo_config(layout, **CONFIG), layer_number)
    load_from_single_rank(layer, reference[layer_number]["state"])
    clear_metrics()
    hidden, ids, weight = inputs()
    dp = ps.get_data_parallel_world_size()
    rows = torch.arange(hidden.shape[1]).chunk(dp)[ps.get_data_parallel_rank()]
    output = layer(hidden[:, rows].contiguous(), padding_mask=ids[rows])[0]
    ((output * weight[:, rows]).sum() * dp).backward()  # gradients are averaged over the data ranks
    reduce_gradients_like_megatron(layer)
    writer = _Scalars()  # what the trainer's Reporter hands to the tracker, with per-layer logging on
    get_moe_metrics_tracker().report(
        loss_scale=1.0, iteration=1, writer=writer, per_layer_logging=True, num_layers=LAYERS
    )
    return dict(
        layer_number=layer_number,
        grads=gradients(layer),
        expected_grads=expected_grads(layer, reference[layer_number]["grads"]),
        reported=writer.values,
    )


@pytest.fixture(scope="module")
def runs():
    (reference,) = run_ranks(single_rank_reference, 1, SINGLE)
    return reference, run_ranks(pipeline_data_parallel_step, 4, Layout(pp=2), reference=reference)


def test_router_gradients_at_pp2_dp2_equal_single_rank(runs):
    reference, results = runs
    assert [r["layer_number"] for r in results] == [1, 1, 2, 2]  # ranks 0, 1: stage 0; ranks 2, 3: stage 1
    for rank, r in enumerate(results):
        assert_close_dicts(r["grads"], r["expected_grads"], what=f"rank {rank} grad")
    assert reference[1]["grads"]["router.weight"].abs().sum() > 0


def test_tracker_reports_single_rank_metrics_at_pp2_dp2(runs):
    reference, results = runs
    for layer in reference.values():  # the halves differ, so a rank's own unaveraged value cannot pass
        assert all(values[0] != values[1] for values in layer["per_rank"].values())
    expected = {
        f"moe/{name}_layer_{layer_number - 1}": value
        for layer_number, layer in reference.items()
        for name, value in layer["metrics"].items()
    }
    for rank, r in enumerate(results):
        reported = {name: r["reported"][name] for name in expected}
        assert_close_dicts(reported, expected, what=f"rank {rank} reported")
