"""The learning-rate schedule: WSD and the anneal stage against lr values worked out by hand, where an anneal
starts (iteration and lr from the checkpoint it continues), and the field-named errors of their config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emo_plugin.cli.pretrain import DEFAULT_CONFIG, parse_config
from emo_plugin.errors import ConfigError
from emo_plugin.run.config import OptimizerSection, ScheduleSection, TrainingConfig
from emo_plugin.training.anneal import AnnealStart, anneal_start
from emo_plugin.training.schedule import lr_at, param_scheduler, set_iteration
from emo_plugin.training.start_point import StartPoint
from tests.helpers import checked


def lrs(sch: ScheduleSection, iterations, opt: OptimizerSection | None = None, anneal=None) -> list[float]:
    """The lr the optimizer's param group holds for each step, as the backends set it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = param_scheduler(optimizer, opt or OptimizerSection(lr=1.0, min_lr=0.1), sch, anneal)
    values = []
    for i in iterations:
        set_iteration(scheduler, i)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_wsd_is_warmup_then_peak_then_the_final_decay():
    sch = ScheduleSection(train_iters=10, lr_warmup_iters=2, lr_decay_style="WSD", lr_wsd_decay_iters=4)
    # warm-up 1/2, 2/2; stable 1.0 through 10 - 4 = 6; then 1 - 0.9 · (i - 6) / 4 down to min_lr 0.1 at 10
    expected = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1]
    assert lrs(sch, range(1, 12)) == pytest.approx(expected)


def test_cosine_is_unchanged():
    sch = ScheduleSection(train_iters=6, lr_warmup_iters=2)
    # after warm-up: 0.1 + 0.9 · (1 + cos(π · (i - 2) / 4)) / 2
    expected = [0.5, 1.0, 0.1 + 0.9 * (1 + 0.5 ** 0.5) / 2, 0.55, 0.1 + 0.9 * (1 - 0.5 ** 0.5) / 2, 0.1]
    assert lrs(sch, range(1, 7)) == pytest.approx(expected)
    assert lr_at(OptimizerSection(lr=1.0, min_lr=0.1), sch, 4) == pytest.approx(0.55)


def test_anneal_starts_at_the_checkpoint_lr_and_ends_at_the_target():
    sch = ScheduleSection(train_iters=105, anneal_iters=5, anneal_min_lr=0.02, lr_warmup_iters=20)
    anneal = AnnealStart(iteration=100, lr=0.5)
    # steps 101..105: 0.5 + (0.02 - 0.5) · (i - 101) / 4; warm-up and decay of the stage before are not used
    assert lrs(sch, range(101, 106), anneal=anneal) == pytest.approx([0.5, 0.38, 0.26, 0.14, 0.02])


def test_anneal_ignores_the_scheduler_state_of_the_checkpoint_it_continues():
    """Megatron checkpoints carry the previous stage's scheduler (max_lr, decay steps); loading it must not win."""
    sch = ScheduleSection(train_iters=104, anneal_iters=4)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    stage_one = param_scheduler(optimizer, OptimizerSection(lr=4e-3, min_lr=4e-4), ScheduleSection(train_iters=100))
    set_iteration(stage_one, 100)
    scheduler = param_scheduler(optimizer, OptimizerSection(), sch, AnnealStart(iteration=100, lr=3e-3))
    scheduler.load_state_dict(stage_one.state_dict())
    assert [set_iteration(scheduler, i) for i in (101, 102, 103, 104)] == pytest.approx([3e-3, 2e-3, 1e-3, 0.0])


def start(common: dict, *, weights_only: bool = False) -> StartPoint:
    return StartPoint(Path("/ckpt"), common.get("iteration", 7), weights_only, "test", common)


def anneal_cfg(**schedule) -> TrainingConfig:
    cfg = TrainingConfig()
    cfg.checkpoint.load = "/ckpt"
    for key, value in schedule.items():
        setattr(cfg.schedule, key, value)
    return cfg


def test_full_state_anneal_continues_after_the_checkpoint_iteration_at_its_recorded_lr():
    cfg = anneal_cfg(anneal_iters=10, train_iters=60)
    assert anneal_start(cfg, start({"iteration": 50, "consumed_samples": 1, "learning_rate": 1e-3})) == \
        AnnealStart(50, 1e-3)


def test_weights_only_anneal_starts_at_iteration_zero_with_the_checkpoint_lr():
    cfg = anneal_cfg(anneal_iters=10, train_iters=10)
    assert anneal_start(cfg, start({"iteration": 50, "learning_rate": 1e-3}, weights_only=True)) == \
        AnnealStart(0, 1e-3)


def test_resumed_anneal_keeps_its_recorded_start():
    cfg = anneal_cfg(anneal_iters=10, train_iters=60, anneal_start_lr=9.0)
    common = {"iteration": 55, "consumed_samples": 1, "learning_rate": 5e-4,
              **AnnealStart(50, 1e-3).to_common()}
    assert anneal_start(cfg, start(common)) == AnnealStart(50, 1e-3)


def test_checkpoint_without_an_lr_record_gets_it_from_its_stored_schedule():
    stored = {"optimizer": {"lr": 1.0, "min_lr": 0.1}, "schedule": {"train_iters": 6, "lr_warmup_iters": 2}}
    cfg = anneal_cfg(anneal_iters=3, train_iters=7)
    assert anneal_start(cfg, start({"iteration": 4, "consumed_samples": 1, "config": stored})) == \
        AnnealStart(4, pytest.approx(0.55))  # the cosine value worked out in test_cosine_is_unchanged


def test_checkpoint_without_any_lr_needs_anneal_start_lr():
    with pytest.raises(ConfigError, match="records no learning rate.*schedule.anneal_start_lr"):
        anneal_start(anneal_cfg(anneal_iters=3, train_iters=3), start({}, weights_only=True))
    assert anneal_start(anneal_cfg(anneal_iters=3, train_iters=3, anneal_start_lr=2e-3),
                        start({}, weights_only=True)) == AnnealStart(0, 2e-3)


def test_anneal_length_must_match_train_iters():
    cfg = anneal_cfg(anneal_iters=10, train_iters=10)
    with pytest.raises(ConfigError, match="schedule.train_iters=10: expected 60.*iteration 50"):
        anneal_start(cfg, start({"iteration": 50, "consumed_samples": 1, "learning_rate": 1e-3}))


def test_anneal_target_above_the_start_lr_is_refused():
    cfg = anneal_cfg(anneal_iters=10, train_iters=10, anneal_min_lr=1e-2)
    with pytest.raises(ConfigError, match="schedule.anneal_min_lr=0.01: expected at most"):
        anneal_start(cfg, start({"learning_rate": 1e-3}, weights_only=True))


def test_anneal_without_a_checkpoint_is_refused():
    no_checkpoint = StartPoint(None, None, False, "checkpoint.save is not set")
    with pytest.raises(ConfigError, match="schedule.anneal_iters=5: expected a checkpoint"):
        anneal_start(anneal_cfg(anneal_iters=5, train_iters=5), no_checkpoint)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--schedule.lr_decay_style=wsd"], "schedule.lr_decay_style='wsd': expected one of cosine, linear, "
                                            "constant, WSD"),
        (["--schedule.lr_decay_style=WSD"], "schedule.lr_wsd_decay_iters=None: expected an integer in [1, "),
        (["--schedule.lr_decay_style=WSD", "--schedule.lr_wsd_decay_iters=1000"],
         "schedule.lr_wsd_decay_iters=1000: expected an integer in [1, "),
        (["--schedule.lr_wsd_decay_iters=5"], "schedule.lr_wsd_decay_iters=5: expected none unless"),
        (["--schedule.lr_decay_style=WSD", "--schedule.lr_wsd_decay_iters=5", "--schedule.lr_wsd_decay_style=step"],
         "schedule.lr_wsd_decay_style='step': expected one of linear"),
        (["--schedule.anneal_iters=5"], "schedule.anneal_iters=5: expected checkpoint.load"),
        (["--schedule.anneal_iters=1", "--checkpoint.load=x"], "schedule.anneal_iters=1: expected none or an "
                                                              "integer >= 2"),
        (["--schedule.anneal_min_lr=1e-4"], "schedule.anneal_min_lr=0.0001: expected 0.0 unless"),
        (["--schedule.anneal_start_lr=1e-4"], "schedule.anneal_start_lr=0.0001: expected None unless"),
        (["--schedule.anneal_iters=5", "--checkpoint.load=x", "--schedule.anneal_start_lr=1e-4",
          "--schedule.anneal_min_lr=1e-3"], "schedule.anneal_start_lr=0.0001: expected none (the checkpoint's lr) "
                                            "or >= schedule.anneal_min_lr"),
    ],
)
def test_schedule_fields_are_validated_by_name(argv, message):
    with pytest.raises(ConfigError) as info:
        checked(parse_config(["--config", str(DEFAULT_CONFIG), *argv]))
    assert message in str(info.value)


def test_wsd_and_anneal_configs_validate():
    checked(parse_config(["--config", str(DEFAULT_CONFIG), "--schedule.lr_decay_style=WSD",
                           "--schedule.lr_wsd_decay_iters=50"]))
    checked(parse_config(["--config", str(DEFAULT_CONFIG), "--schedule.anneal_iters=50", "--checkpoint.load=x"]))
    # a weights-only anneal shorter than the YAML's 20 warm-up steps: the anneal has no warm-up
    checked(parse_config(["--config", str(DEFAULT_CONFIG), "--schedule.anneal_iters=5", "--schedule.train_iters=5",
                           "--checkpoint.load=x", "--checkpoint.finetune=true"]))
