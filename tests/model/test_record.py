"""The model record: HF config and dict round trips are exact, its fields travel through every front end, bad
fields are named, and a trainer checkpoint carries the record so export needs nothing from training."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emo_plugin.convert.hf_config import hf_config_kwargs, record_from_hf_config
from emo_plugin.errors import ConfigError
from emo_plugin.model.megatron_config import transformer_config
from emo_plugin.model.record import RECORD_KEY, ModelRecord
from emo_plugin.model.run_config import record_of_run_config
from emo_plugin.model.sizes import SIZES
from tests.helpers import resolved

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(SIZES))
def test_record_to_hf_config_to_record_is_identity(name, tmp_path):
    from emo_plugin.convert.hf_files import write_config
    from emo_plugin.hf import EmoConfig

    record = dataclasses.replace(SIZES[name], eos_token_id=100257, pad_token_id=100277)
    assert record_from_hf_config(EmoConfig(**hf_config_kwargs(record))) == record
    # ... also through config.json on disk
    write_config(tmp_path, EmoConfig(**hf_config_kwargs(record)), torch.bfloat16)
    assert record_from_hf_config(EmoConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))) == record


def test_rank_limited_pools_travel_through_every_front_end(tmp_path):
    """emo.pool_max_ranks / pool_rank_groups: run config → record → Megatron config, HF config, Megatron-LM flags."""
    from emo_plugin.hf import EmoConfig
    from emo_plugin.model.megatron_lm_args import megatron_lm_flags

    record = record_of_run_config({"model": {"size": "tiny"}, "emo": {"pool_max_ranks": 1, "pool_rank_groups": 2},
                                   "data": {"seq_length": 64}})
    assert (record.pool_max_ranks, record.pool_rank_groups) == (1, 2)
    config = transformer_config(record, params_dtype=torch.float32)
    assert (config.emo.pool_max_ranks, config.emo.pool_rank_groups) == (1, 2)
    assert record_from_hf_config(EmoConfig(**hf_config_kwargs(record))) == record
    flags = megatron_lm_flags(record)
    assert flags[flags.index("--emo-pool-max-ranks") + 1] == "1"
    assert flags[flags.index("--emo-pool-rank-groups") + 1] == "2"


def test_inert_experts_are_dropped_in_hf_and_padded_back():
    from emo_plugin.hf import EmoConfig

    padded = SIZES["emo_1b14b"].with_inert_padding(8)
    assert (padded.num_moe_experts, padded.num_inert_experts, padded.num_selectable_experts) == (128, 1, 127)
    config = EmoConfig(**hf_config_kwargs(padded))
    assert (config.num_experts, config.num_experts_per_tok) == (128, 8)  # 127 routed + 1 shared slot
    assert record_from_hf_config(config).with_inert_padding(8) == padded


def test_hf_config_without_routing_recipe_routes_unrestricted():
    from emo_plugin.hf import EmoConfig

    record = record_from_hf_config(EmoConfig(num_experts=16, num_experts_per_tok=3, emo_inference_pool_size=4))
    assert (record.pool_min, record.pool_max, record.pool_eval) == (2, 15, 4)


def test_dict_round_trip_is_identity_and_json_able():
    record = SIZES["small"].with_inert_padding(3)
    assert ModelRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_expert": 3}, r"unknown model record field\(s\) \['num_expert'\]"),
        ({"num_layers": "two"}, r"num_layers='two': expected an integer"),
        ({"qk_layernorm": "maybe"}, r"qk_layernorm='maybe': expected true or false"),
        ({"num_layers": None}, r"num_layers=None: expected an integer"),
        ({"eos_grouping": "before"}, r"eos_grouping='before': expected one of ends, starts"),
        ({"pool_min_per_layer": 8}, r"pool_min_per_layer=8: expected a list of integers"),
        ({"pool_max_per_layer": [8, "x"]}, r"pool_max_per_layer\[1\]='x': expected an integer"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(ConfigError, match=r"my\.json: " + message):
        ModelRecord.from_dict({**SIZES["tiny"].to_dict(), **change}, "my.json")


def test_missing_fields_are_named_and_numbers_may_be_text():
    values = SIZES["tiny"].to_dict()
    del values["pool_eval"]
    with pytest.raises(ConfigError, match=r"missing model record field\(s\) \['pool_eval'\]"):
        ModelRecord.from_dict(values)
    values.update(pool_eval="4", norm_epsilon="1e-6")  # what YAML 1.1 makes of 1e-6
    assert ModelRecord.from_dict(values) == SIZES["tiny"]


PER_LAYER_STARTS = dataclasses.replace(SIZES["tiny"], pool_min_per_layer=(8, 2), pool_max_per_layer=(8, 4),
                                       eos_grouping="starts")


def test_eos_grouping_and_per_layer_pools_survive_json_hf_config_and_megatron(tmp_path):
    from emo_plugin.convert.hf_files import write_config
    from emo_plugin.hf import EmoConfig

    assert ModelRecord.from_dict(json.loads(json.dumps(PER_LAYER_STARTS.to_dict()))) == PER_LAYER_STARTS
    config = EmoConfig(**hf_config_kwargs(PER_LAYER_STARTS))
    assert config.emo_eos_grouping == "starts" and record_from_hf_config(config) == PER_LAYER_STARTS
    write_config(tmp_path, config, torch.bfloat16)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["emo_eos_grouping"] == "starts" and on_disk["emo_routing"]["pool_max_per_layer"] == [8, 4]
    assert record_from_hf_config(EmoConfig.from_dict(on_disk)) == PER_LAYER_STARTS
    emo = transformer_config(PER_LAYER_STARTS).emo
    assert (emo.pool_range(1), emo.pool_range(2)) == ((8, 8), (2, 4))


def test_run_config_sets_eos_grouping_and_per_layer_pools():
    run = {"model": {"size": "tiny"},
           "emo": {"eos_grouping": "starts", "pool_min_per_layer": ["8", "2"], "pool_max_per_layer": [8, 4]}}
    assert record_of_run_config(run) == PER_LAYER_STARTS
    assert record_of_run_config({"model": {"size": "tiny"}}).eos_grouping == "ends"


def test_default_token_ids_are_the_project_tokenizers():
    from emo_plugin.data.tokenizer import EOD_ID, PAD_ID

    assert (SIZES["tiny"].eos_token_id, SIZES["tiny"].pad_token_id) == (EOD_ID, PAD_ID)


EXPORT_WITHOUT_TRAINING = """
import json, sys
import emo_plugin.convert.checkpoint_config as source
from emo_plugin.convert import export_to_hf

def refuse(*args):
    raise AssertionError("the model was read from the training config, not from the record")

source.record_of_run_config = refuse  # the run config is there, but the model must come from the record
summary = export_to_hf(sys.argv[1], sys.argv[2], dtype="fp32", progress=False)
loaded = sorted(m for m in sys.modules if m.startswith(("emo_plugin.training", "emo_plugin.data")))
print(json.dumps({"model": summary["model"], "loaded": loaded}))
"""


def test_trainer_checkpoint_holds_the_record_and_exports_without_training_code(tmp_path):
    from emo_plugin import checkpoint
    from emo_plugin.data.preprocess import preprocess_jsonl
    from emo_plugin.data.tokenizer import EmoTokenizer
    from tests.training.conftest import base_args, env, run_cli

    tokenizer = REPO / "examples/data/tokenizer.model"
    prefix = tmp_path / "data" / "corpus_text_document"
    preprocess_jsonl([REPO / "examples/data/corpus.jsonl"], tokenizer, prefix, progress=False)
    run_cli(base_args(str(prefix), tmp_path, schedule__train_iters=1, emo__pool_eval=3, data__seq_length=32))

    iteration = checkpoint.iteration_dir(tmp_path / "ckpt", 1)
    common = checkpoint.load_common(tmp_path / "ckpt", 1)
    record = ModelRecord.from_dict(common[RECORD_KEY])
    sp = EmoTokenizer(str(tokenizer))
    expected = dataclasses.replace(SIZES["tiny"], pool_eval=3, seq_length=32, vocab_size=common["vocab_size"],
                                   eos_token_id=sp.eod, pad_token_id=sp.pad)
    assert record == expected

    proc = subprocess.run([sys.executable, "-c", EXPORT_WITHOUT_TRAINING, str(iteration), str(tmp_path / "hf")],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"model": expected.to_dict(), "loaded": []}
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"], config["emo_routing"]["pool_eval"]) == (sp.eod, sp.pad, 3)


def test_conversion_modules_import_nothing_of_training_or_data():
    code = (
        "import importlib, pkgutil, sys, emo_plugin.convert as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module(f'emo_plugin.convert.{m.name}')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('emo_plugin.training', 'emo_plugin.data'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_training_builds_the_rotary_base_of_its_record(megatron_single_rank):
    from emo_plugin.run.config import TrainingConfig
    from emo_plugin.training.host_backend import HostBackend

    cfg = TrainingConfig()
    cfg.model.rotary_base = 10_000
    backend = HostBackend(resolved(cfg))
    head_dim = SIZES["tiny"].head_dim
    expected = 1.0 / 10_000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    torch.testing.assert_close(backend.model.rotary_pos_emb.inv_freq, expected)
