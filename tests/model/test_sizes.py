"""Named model sizes (``emo_plugin/model/sizes.py``) with single fields overridden."""

import dataclasses

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.model.sizes import SIZES, sized_record


def test_sizes_with_overrides():
    three_layers = dataclasses.replace(SIZES["tiny"], num_layers=3)
    assert sized_record("tiny", {"num_layers": 3, "pool_eval": None}) == three_layers
    with pytest.raises(ConfigError, match=r"model\.size='huge'"):
        sized_record("huge", {})
    with pytest.raises(ConfigError, match=r"\['layers'\]"):
        sized_record("tiny", {"layers": 3})
