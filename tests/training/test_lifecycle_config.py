"""The lifecycle fields are checked with the rest of the config, each refusal naming its field and the fix."""

from __future__ import annotations

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.run.config import TrainingConfig
from tests.helpers import checked
from tests.training.conftest import REPO


def _config(tmp_path, **values) -> TrainingConfig:
    cfg = TrainingConfig()
    cfg.parallel.device = "cpu"
    cfg.data.corpus = str(REPO / "examples/data/corpus.jsonl")
    cfg.data.tokenizer_model = str(REPO / "examples/data/tokenizer.model")
    cfg.data.cache_dir = str(tmp_path / "data")
    cfg.checkpoint.save = str(tmp_path / "ckpt")
    for key, value in values.items():
        section, _, name = key.rpartition("__")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"checkpoint__finetune": True}, "checkpoint.finetune=True: expected checkpoint.load to name the weights"),
        ({"checkpoint__keep_last_n": -1}, "checkpoint.keep_last_n=-1: expected an integer >= 0 (0: keep all)"),
        ({"schedule__exit_duration_minutes": 0.0}, "schedule.exit_duration_minutes=0.0: expected none or a positive"),
        ({"schedule__exit_duration_minutes": 5.0, "checkpoint__save": None},
         "schedule.exit_duration_minutes=5.0: expected checkpoint.save to be set"),
        ({"nan_max_skipped_fraction": 1.5}, "nan_max_skipped_fraction=1.5: expected a share in [0, 1]"),
    ],
)
def test_lifecycle_fields_are_checked(tmp_path, values, message):
    checked(_config(tmp_path))  # the base config is valid
    with pytest.raises(ConfigError) as error:
        checked(_config(tmp_path, **values))
    assert message in str(error.value)
