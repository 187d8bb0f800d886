"""``resolve`` is the one derivation of a run: an ``emo-pretrain`` step and a ``--dry-run`` each resolve once,
and what they resolve is what the trainer builds.

The counting runs ``emo-pretrain``'s own ``main`` in a fresh process (a training run owns its process group),
with ``resolve``, the device choice and the config → record derivation (``record_of_run_config``'s one call of
``sized_record``, which every other derivation of a record from a config would repeat) wrapped in counters.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.run.config import TrainingConfig, set_value
from emo_plugin.run.resolve import resolve
from tests.training.conftest import REPO, base_args, env

COUNTING_MAIN = """
import collections, json, sys
import emo_plugin.model.run_config as run_config
import emo_plugin.run.resolve as resolve_module

calls = collections.Counter()

def counted(name, function):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)
    return wrapper

resolve_module.resolve = counted("resolve", resolve_module.resolve)
resolve_module._device = counted("device", resolve_module._device)
run_config.sized_record = counted("record", run_config.sized_record)
from emo_plugin.cli.pretrain import main  # after the wraps: every caller binds the counted resolve

code = main(sys.argv[1:])
print("COUNTS " + json.dumps({"code": code, **calls}))
"""


def _counted_run(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", COUNTING_MAIN, *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("COUNTS ")]
    assert lines, f"no counts (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("COUNTS "):])


def test_one_training_step_resolves_the_run_once(corpus_prefix, tmp_path):
    counts = _counted_run(base_args(corpus_prefix, tmp_path, schedule__train_iters=1))
    assert counts == {"code": 0, "resolve": 1, "device": 1, "record": 1}


def test_one_dry_run_resolves_the_run_once(tmp_path):
    counts = _counted_run(["--dry-run", "--config", "emo_1b14b"])
    assert counts == {"code": 0, "resolve": 1, "device": 1, "record": 1}


def _config(**values) -> TrainingConfig:
    cfg = TrainingConfig()
    for key, value in {"data.tokenizer_model": str(REPO / "examples/data/tokenizer.model"), **values}.items():
        set_value(cfg, key, value)
    return cfg


def test_the_resolved_run_holds_the_trainers_numbers():
    run = resolve(_config(**{"batch.micro_batch_size": 2, "batch.global_batch_size": 16,
                             "parallel.device": "cpu"}), 2, planning_only=True)
    assert (run.device, run.layout.dp, run.num_micro_batches) == ("cpu", 2, 4)
    assert run.vocab_size % 128 == 0 and run.record.vocab_size == run.vocab_size  # the tokenizer's, padded
    assert run.attention == "dense_mask" and not run.transformer_engine
    assert run.transformer_config.num_moe_experts == run.record.num_moe_experts


def test_inert_padding_is_derived_from_expert_parallelism_unless_given():
    derived = resolve(_config(**{"model.num_moe_experts": 7, "parallel.expert_model_parallel_size": 4,
                                 "batch.micro_batch_size": 2,
                                 "parallel.device": "cpu", "emo.pool_max": 7}), 4, planning_only=True).record
    assert (derived.num_moe_experts, derived.num_inert_experts, derived.num_selectable_experts) == (8, 1, 7)
    given = resolve(_config(**{"model.num_moe_experts": 8, "emo.num_inert_experts": 1, "emo.pool_max": 7,
                               "parallel.device": "cpu"}), 1, planning_only=True).record
    assert (given.num_moe_experts, given.num_inert_experts) == (8, 1)


@pytest.mark.parametrize("values, world_size, message", [
    ({"batch.global_batch_size": 6}, 1, "batch.global_batch_size=6: expected a multiple of micro_batch_size"),
    ({"parallel.expert_model_parallel_size": 2}, 3, "ep*etp*pp=2 does not divide the world size 3"),
    ({"emo.pool_min": 9}, 1, "emo.pool_min=9"),
    ({"parallel.device": "tpu"}, 1, "parallel.device='tpu': expected 'auto', 'cpu' or 'cuda'"),
])
def test_what_only_the_derived_run_shows_is_refused_with_the_field(values, world_size, message):
    with pytest.raises(ConfigError, match=None) as info:
        resolve(_config(**{"parallel.device": "cpu", **values}), world_size, planning_only=True)
    assert message in str(info.value)
