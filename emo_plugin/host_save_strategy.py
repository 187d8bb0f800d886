"""A synchronous torch_dist save strategy that runs without CUDA.

Megatron's ``TorchDistSaveShardedStrategy.save`` always goes through its async machinery
(``FileSystemWriterAsync``, which calls ``torch.cuda.synchronize()``, and a finalize step that allocates on
``torch.cuda.current_device()``). This subclass keeps Megatron's translation to PyTorch sharded tensors and its
``MCoreSavePlanner`` (so the checkpoint is an ordinary torch_dist checkpoint, loadable and reshardable by
``dist_checkpointing.load``) and writes with PyTorch DCP's synchronous ``FileSystemWriter``.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed.checkpoint as dcp
from megatron.core.dist_checkpointing.strategies.torch import (
    MCoreSavePlanner,
    TorchDistSaveShardedStrategy,
    mcore_to_pyt_state_dict,
)

from emo_plugin.megatron_compat import sharded_entries_by_key


class HostTorchDistSaveStrategy(TorchDistSaveShardedStrategy):
    def save(self, sharded_state_dict, checkpoint_dir: Path) -> None:
        by_key = sharded_entries_by_key(sharded_state_dict, self.keep_only_main_replica)
        pyt_state_dict = mcore_to_pyt_state_dict(by_key, False)
        dcp.save(
            pyt_state_dict,
            storage_writer=dcp.FileSystemWriter(str(checkpoint_dir), thread_count=1, sync_files=True),
            planner=MCoreSavePlanner(
                dedup_replicated_tensors=not self.keep_only_main_replica,
                flatten_state_dict=False,
                flatten_sharded_tensors=False,
            ),
        )

    def async_save(self, *args, **kwargs):
        raise NotImplementedError("HostTorchDistSaveStrategy saves synchronously")
