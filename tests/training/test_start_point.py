"""``start_point.choose``: the resume rules on small real checkpoints, without training.

Checkpoints are written by ``checkpoint.save`` with the common state the trainer (``consumed_samples``) or
tools/import_hf.py (weights only) stores; the expected start is stated by hand from the rules.
"""

from __future__ import annotations

import pytest
import torch
from megatron.core.dist_checkpointing import ShardedTensor

from emo_plugin import checkpoint
from emo_plugin.errors import ConfigError
from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
from emo_plugin.run.config import TrainingConfig
from emo_plugin.training import start_point


def _save(root, iteration, *, training_state=True):
    state = {"w": ShardedTensor.from_rank_offsets("w", torch.zeros(2), replica_id=0), "iteration": iteration}
    if training_state:
        state["consumed_samples"] = 8 * iteration
    checkpoint.save(root, iteration, state, HostTorchDistSaveStrategy())


def _cfg(save=None, load=None, **checkpoint_fields) -> TrainingConfig:
    cfg = TrainingConfig()
    cfg.checkpoint.save, cfg.checkpoint.load = (str(save) if save else None), (str(load) if load else None)
    for name, value in checkpoint_fields.items():
        setattr(cfg.checkpoint, name, value)
    return cfg


def test_save_wins_over_a_newer_load(megatron_single_rank, tmp_path):
    _save(tmp_path / "A", 30)
    _save(tmp_path / "B", 5)
    start = start_point.choose(_cfg(save=tmp_path / "B", load=tmp_path / "A", finetune=True))
    assert (start.root, start.iteration, start.weights_only) == (tmp_path / "B", 5, False)
    assert start.reason.startswith("the newest checkpoint in checkpoint.save: resuming this run with its full state")


def test_load_names_an_iteration_folder(megatron_single_rank, tmp_path):
    _save(tmp_path / "A", 2)
    _save(tmp_path / "A", 4)
    start = start_point.choose(_cfg(save=tmp_path / "B", load=tmp_path / "A" / "iter_0000002"))
    assert (start.root, start.iteration, start.weights_only) == (tmp_path / "A", 2, False)
    assert start.reason == (f"checkpoint.load, full training state, because checkpoint.save={tmp_path / 'B'} holds "
                            "no checkpoint yet")


def test_weights_only_checkpoint_in_save_starts_from_its_weights(megatron_single_rank, tmp_path):
    _save(tmp_path / "D", 0, training_state=False)  # an import written straight into the save folder
    start = start_point.choose(_cfg(save=tmp_path / "D", load=tmp_path / "D"))
    assert (start.root, start.iteration, start.weights_only) == (tmp_path / "D", 0, True)


def test_same_empty_folder_for_load_and_save_starts_from_scratch(megatron_single_rank, tmp_path):
    start = start_point.choose(_cfg(save=tmp_path / "D", load=tmp_path / "D"))
    assert start.root is None and "(it is also checkpoint.load): training from scratch" in start.reason


def test_load_without_latest_file_lists_the_folders_it_has(megatron_single_rank, tmp_path):
    _save(tmp_path / "A", 3)
    (tmp_path / "A" / checkpoint.LATEST).unlink()
    with pytest.raises(ConfigError) as error:
        start_point.choose(_cfg(save=tmp_path / "B", load=tmp_path / "A"))
    assert (f"checkpoint.load={tmp_path / 'A'}: holds no {checkpoint.LATEST} (it has complete folders "
            "iter_0000003: pass one of them as checkpoint.load)") in str(error.value)
    assert sorted(p.name for p in (tmp_path / "A").iterdir()) == ["iter_0000003"]
