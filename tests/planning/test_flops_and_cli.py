"""The dry run end to end: FLOPs equal what the trainer reports, the shipped recipes fit and say so, an
EP 1 layout of the flagship does not (with changes that do), and GPU training refuses what does not fit."""

from __future__ import annotations

import re

import pytest

from emo_plugin.cli.pretrain import main, parse_config
from emo_plugin.errors import ConfigError
from emo_plugin.planning.fit_check import check_fits
from emo_plugin.planning.plan import GIB, make_plan
from tests.helpers import planning_run
from tests.training.conftest import REPO, base_args, read_metrics, run_cli

RECIPES = ["emo_1b14b", "stdmoe_1b14b", "emo_1b14b_1node", "emo_1b14b_anneal", "emo_anneal_stdmoe_1b14b"]


def test_flops_per_step_equal_the_trainers_mfu_numerator(corpus_prefix, tmp_path):
    """A 1-step CPU run reports TFLOP/s per rank and tokens/s; their ratio × tokens per step is its FLOPs per step."""
    args = base_args(corpus_prefix, tmp_path, schedule__train_iters=1, schedule__lr_warmup_iters=0,
                     batch__global_batch_size=2, batch__micro_batch_size=2, data__seq_length=64,
                     checkpoint__save="none")
    run_cli(args)
    record = read_metrics(tmp_path / "metrics.jsonl")[1]
    cfg = parse_config(args)
    tokens_per_step = cfg.batch.global_batch_size * cfg.data.seq_length
    reported = record["throughput"] * 1e12 / record["throughput/tokens-per-sec"] * tokens_per_step
    assert make_plan(planning_run(cfg, 1)).flops_per_step == pytest.approx(reported, rel=1e-9)


def _dry_run(capsys, *extra: str) -> tuple[int, str]:
    code = main(["--dry-run", *extra])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("recipe", RECIPES)
def test_shipped_recipes_fit_and_their_headers_state_the_plan(capsys, recipe):
    path = REPO / f"emo_plugin/configs/{recipe}.yaml"
    code, out = _dry_run(capsys, "--config", str(path))
    assert code == 0 and "verdict: fits" in out
    cfg = parse_config(["--config", str(path)])
    plan = make_plan(planning_run(cfg, cfg.plan.world_size))
    header = re.search(r"= ([\d.]+) GiB of (\d+) usable: fits", path.read_text())
    assert header, f"{path}: the header must state the planner's total"
    assert float(header.group(1)) == round(plan.worst.total / GIB, 1)
    assert float(header.group(2)) == plan.available / GIB


def test_flagship_without_expert_parallelism_does_not_fit(capsys):
    recipe = "emo_1b14b"
    code, out = _dry_run(capsys, "--config", recipe, "--parallel.expert_model_parallel_size=1")
    assert code == 1
    verdict = next(line for line in out.splitlines() if line.startswith("verdict"))
    assert "does not fit" in verdict and "gradients" in verdict
    suggested = [line.split("→")[0].split() for line in out.splitlines() if "→" in line]
    assert suggested and all(any(f.startswith("--parallel.expert_model_parallel_size=") for f in s) for s in suggested)
    for flags in suggested:  # every suggestion, applied on the command line, fits
        code, out = _dry_run(capsys, "--config", recipe, "--parallel.expert_model_parallel_size=1", *flags)
        assert code == 0, flags


def test_training_refuses_a_layout_that_does_not_fit_unless_told():
    cfg = parse_config(["--config", "emo_1b14b",
                        "--parallel.expert_model_parallel_size=1"])
    with pytest.raises(ConfigError, match=r"needs an estimated [\d.]+ GiB per GPU .*plan.skip_fit_check"):
        check_fits(planning_run(cfg, 64))
    cfg.plan.skip_fit_check = True
    check_fits(planning_run(cfg, 64))
    cfg.plan.skip_fit_check = False
    cfg.parallel.expert_model_parallel_size = 8
    check_fits(planning_run(cfg, 64))


def test_dry_run_needs_a_world_size(capsys, monkeypatch):
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    code = main(["--dry-run", "--config", "small_gpu"])
    assert code == 2 and "plan.world_size" in capsys.readouterr().err


def test_gpu_training_stops_before_any_device_work_when_the_plan_does_not_fit(corpus_prefix, tmp_path):
    """``emo-pretrain`` on the EP 1 flagship, one process: refused by the planner before CUDA or NCCL start."""
    recipe = "emo_1b14b"
    proc = run_cli(["--config", recipe, "--parallel.expert_model_parallel_size=1", "--model.transformer_impl=local",
                    "--data.intra_document_attention=false",  # without TE here: the local spec
                    f"--data.paths={corpus_prefix}", f"--data.tokenizer_model={REPO / 'examples/data/tokenizer.model'}",
                    f"--checkpoint.save={tmp_path / 'ckpt'}", f"--logging.tensorboard_dir={tmp_path / 'tb'}"],
                   check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(r"config error: plan: pipeline stage 0 .* needs an estimated [\d.]+ GiB per GPU", proc.stderr)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("override, field", [("--plan.device_memory_gib=0", "plan.device_memory_gib"),
                                             ("--plan.reserved_gib=90", "plan.reserved_gib"),
                                             ("--plan.world_size=0", "plan.world_size"),
                                             ("--parallel.expert_model_parallel_size=3", "expert_model_parallel_size")])
def test_dry_run_names_the_bad_field(capsys, override, field):
    code = main(["--dry-run", "--config", "emo_1b14b", override])
    err = capsys.readouterr().err
    assert code == 2 and "config error" in err and field in err
