"""EMO-anneal end to end at tiny size on CPU: a standard MoE (pools = all 8 routed experts) trains 3 steps and
saves; an EMO run with document pools continues from it and anneals its learning rate linearly from the
checkpoint's lr (first step) to 0 (last step), with the full training state or from the weights only, and
keeps its anneal when it is stopped and relaunched. Both validation losses are reported; for the standard MoE
they coincide."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emo_plugin import checkpoint
from tests.helpers import run_record
from tests.training.conftest import base_args, read_metrics, run_cli

STD_MOE = {"emo__pool_min": 8, "emo__pool_max": 8, "emo__pool_eval": 8}  # tiny: 8 routed experts
LR, MIN_LR, WARMUP, DECAY = 3e-3, 3e-4, 1, 8  # tiny_cpu.yaml's lr; base_args' warm-up and decay length
# Megatron's cosine after warm-up, at the standard MoE's last step (iteration 3)
CHECKPOINT_LR = MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * (3 - WARMUP) / (DECAY - WARMUP)))
ANNEAL_LRS = [CHECKPOINT_LR, CHECKPOINT_LR / 2, 0.0]  # 3 anneal steps: linear from the checkpoint's lr to 0


@pytest.fixture(scope="module")
def std_moe(corpus_prefix, tmp_path_factory):
    out = tmp_path_factory.mktemp("stdmoe")
    run_cli(base_args(corpus_prefix, out, schedule__train_iters=3, eval__iters=1, eval__interval=0, **STD_MOE))
    return out


def lrs(metrics_file) -> dict[int, float]:
    return {k: r["learning-rate"] for k, r in read_metrics(metrics_file).items() if isinstance(k, int)}


def test_standard_moe_validation_losses_coincide_and_its_checkpoint_records_its_lr(std_moe):
    valid = read_metrics(std_moe / "metrics.jsonl")[("valid", 3)]
    assert valid["lm loss validation"] == valid["lm loss validation pooled"]  # pools of all experts = plain top-k
    assert lrs(std_moe / "metrics.jsonl")[3] == pytest.approx(CHECKPOINT_LR)
    assert checkpoint.load_common(std_moe / "ckpt", 3)["learning_rate"] == pytest.approx(CHECKPOINT_LR)


def test_emo_anneal_with_the_full_state_continues_after_iteration_3_and_survives_a_relaunch(
        std_moe, corpus_prefix, tmp_path):
    args = base_args(corpus_prefix, tmp_path, checkpoint__load=std_moe / "ckpt", schedule__anneal_iters=3,
                     schedule__train_iters=6, eval__iters=1, eval__interval=0,
                     logging__tensorboard_dir=tmp_path / "tb")
    stopped = run_cli([*args, "--schedule.exit_duration_minutes=1e-6"], check=False)
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert f" anneal: linear from lr {CHECKPOINT_LR:.6E} at iteration 4 to 0.000000E+00 at iteration 6" \
        in stopped.stdout
    assert lrs(tmp_path / "metrics.jsonl") == pytest.approx({4: ANNEAL_LRS[0]})

    resumed = run_cli(args).stdout  # resumes from its own checkpoint at iteration 4, same anneal
    assert "the newest checkpoint in checkpoint.save" in resumed
    assert lrs(tmp_path / "metrics.jsonl") == pytest.approx(dict(zip((4, 5, 6), ANNEAL_LRS)))
    common = checkpoint.load_common(tmp_path / "ckpt", 6)
    assert common["anneal_start"] == {"iteration": 3, "lr": pytest.approx(CHECKPOINT_LR)}
    assert common["learning_rate"] == 0.0
    valid = read_metrics(tmp_path / "metrics.jsonl")[("valid", 6)]
    assert {"lm loss validation", "lm loss validation pooled"} <= valid.keys()
    assert "pooled (pool_eval=4) lm loss value" in resumed
    tags = set()
    for events in (tmp_path / "tb").iterdir():
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"lm loss validation", "lm loss validation pooled"} <= tags


def test_emo_anneal_from_the_weights_only_starts_at_iteration_0_with_the_checkpoint_lr(
        std_moe, corpus_prefix, tmp_path):
    run_cli(base_args(corpus_prefix, tmp_path, checkpoint__load=std_moe / "ckpt", checkpoint__finetune="true",
                      schedule__anneal_iters=3, schedule__train_iters=3))
    assert lrs(tmp_path / "metrics.jsonl") == pytest.approx(dict(zip((1, 2, 3), ANNEAL_LRS)))


@pytest.mark.parametrize("anneal", ["emo_1b14b_anneal", "emo_anneal_stdmoe_1b14b"])
def test_shipped_anneal_configs_load_their_stage_one_checkpoint(anneal):
    """Same architecture as the run they continue (only emo.pool_* may differ), 50B tokens of anneal after AI2's
    238,419 steps of 1024 × 4096 tokens."""
    from emo_plugin.cli.pretrain import parse_config
    from emo_plugin.training.architecture_check import architecture

    stage_one = "stdmoe_1b14b" if "stdmoe" in anneal else "emo_1b14b"
    first, second = (parse_config(["--config", name])
                     for name in (stage_one, anneal))
    assert architecture(run_record(first)) == architecture(run_record(second))
    tokens_per_step = second.batch.global_batch_size * second.data.seq_length
    assert first.schedule.train_iters == math.ceil(1e12 / tokens_per_step) == 238_419
    assert second.schedule.anneal_iters == math.ceil(50e9 / tokens_per_step) == 11_921
    assert second.schedule.train_iters == first.schedule.train_iters + second.schedule.anneal_iters
    assert (run_record(second).pool_min, run_record(second).pool_max) == (8, 128)  # EMO's pools in stage 2
