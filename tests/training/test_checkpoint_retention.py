"""``checkpoint.save(keep_last_n=...)``: what is deleted, what never is, and crash leftovers.

Small real torch_dist checkpoints (one sharded tensor each) written by the same ``checkpoint.save`` the trainer
uses; the expected survivors are listed by hand from the rule (newest N, plus the protected one, never a newer
lineage's folder).
"""

from __future__ import annotations

import torch
from megatron.core.dist_checkpointing import ShardedTensor

from emo_plugin import checkpoint
from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy


def _save(root, iteration, **kwargs):
    tensor = torch.full((4,), float(iteration))
    state = {"w": ShardedTensor.from_rank_offsets("w", tensor, replica_id=0), "iteration": iteration}
    return checkpoint.save(root, iteration, state, HostTorchDistSaveStrategy(), **kwargs)


def _folders(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith(("iter_", ".iter_")))


def test_keep_last_n_keeps_the_newest_and_the_protected(megatron_single_rank, tmp_path):
    root = tmp_path / "ckpt"
    for iteration in range(1, 6):
        _save(root, iteration, keep_last_n=2, protect={1})
        assert checkpoint.latest_iteration(root) == iteration
    assert _folders(root) == ["iter_0000001", "iter_0000004", "iter_0000005"]
    # The survivors are complete and hold their own tensors.
    loaded = checkpoint.load(root, 4, {"w": ShardedTensor.from_rank_offsets("w", torch.zeros(4), replica_id=0)})
    assert loaded["w"].tolist() == [4.0] * 4


def test_keep_last_n_one_never_deletes_the_new_latest_nor_a_newer_lineage(megatron_single_rank, tmp_path):
    root = tmp_path / "ckpt"
    _save(root, 9)                        # a folder of a later run, e.g. copied in; 'latest' is then rewound
    _save(root, 2)
    _save(root, 3, keep_last_n=1)
    assert _folders(root) == ["iter_0000003", "iter_0000009"]
    assert checkpoint.latest_iteration(root) == 3


def test_interrupted_deletion_leaves_no_complete_looking_folder(megatron_single_rank, tmp_path):
    root = tmp_path / "ckpt"
    _save(root, 1)
    _save(root, 2)
    # What a kill between the rename and the end of rmtree leaves: a hidden, half-deleted folder.
    (root / "iter_0000001").rename(root / ".iter_0000001.deleting")
    (root / ".iter_0000001.deleting" / "metadata.json").unlink()
    assert checkpoint.complete_iterations(root) == [2]
    checkpoint.remove_incomplete(root)
    assert _folders(root) == ["iter_0000002"]
    assert checkpoint.latest_iteration(root) == 2
