"""The model record of a training run config (``emo_plugin/model/run_config.py``)."""

import dataclasses

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.model.run_config import record_of_run_config
from emo_plugin.model.sizes import SIZES


def test_run_config_overrides_single_fields_of_its_size():
    run = {"model": {"size": "small", "hidden_size": 256, "init_method_std": 0.01},
           "emo": {"num_inert_experts": 1, "num_moe_experts": 5, "lb_scope": "global_batch"},
           "data": {"seq_length": 64, "tokenizer_model": "x.model"}}
    record = record_of_run_config(run)
    # emo.num_moe_experts is no emo field: a run config's sections carry training-only fields that are not read
    assert record == dataclasses.replace(SIZES["small"], hidden_size=256, num_inert_experts=1, seq_length=64)
    with pytest.raises(ConfigError, match=r"model\.size is missing"):
        record_of_run_config({"model": {}})
