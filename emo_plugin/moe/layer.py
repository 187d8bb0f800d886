"""``EmoMoELayer``: Megatron's ``MoELayer`` that carries routing ids to its ``EmoRouter``.

The ids travel in ``GPTModel.forward(padding_mask=...)`` as an integer tensor [b, s] (see ``routing_ids.py``).
Megatron would cast that argument to bool; this layer peels the ids off first, hands them to the router for
exactly one forward, and passes the real padding mask (id == 0) on to Megatron.

Two Megatron paths need care:
* sequence parallelism on stages where GPTModel did not scatter the mask (non-first pipeline stages): the
  layer takes its own contiguous sequence chunk;
* selective recompute of the MoE module (``recompute_modules=["moe"]``): Megatron would re-run the forward
  during backward, possibly after later micro-batches replaced any stored ids. This layer owns that
  checkpoint and makes the ids a checkpoint *input*, so recompute routes with the micro-batch's own ids
  (``megatron_compat.take_over_moe_recompute`` and ``checkpoint_moe_forward``).

The router sees the ids only while ``MoELayer.forward`` runs (it casts ``padding_mask`` to bool before routing,
so the ids cannot travel further as a forward argument).
"""

from __future__ import annotations

import torch
from megatron.core.transformer.moe.moe_layer import MoELayer

from emo_plugin.megatron_compat import checkpoint_moe_forward, take_over_moe_recompute


class EmoMoELayer(MoELayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recompute_with_routing_ids = take_over_moe_recompute(self)

    def forward(self, hidden_states: torch.Tensor, intermediate_tensors=None, padding_mask=None):
        routing_ids_SB = None
        if padding_mask is not None and padding_mask.dtype != torch.bool:
            routing_ids_SB = self._local_chunk(padding_mask, hidden_states.shape[0]).transpose(0, 1)
            padding_mask = routing_ids_SB.transpose(0, 1) <= 0
        if self.recompute_with_routing_ids and self.training and intermediate_tensors is None:
            return checkpoint_moe_forward(self, self._forward_with_ids, hidden_states, routing_ids_SB, padding_mask)
        return self._forward_with_ids(hidden_states, routing_ids_SB, padding_mask, intermediate_tensors)

    def _forward_with_ids(self, hidden_states, routing_ids_SB, padding_mask, intermediate_tensors=None):
        self.router.routing_ids_SB = routing_ids_SB
        try:
            return super().forward(hidden_states, intermediate_tensors, padding_mask)
        finally:
            self.router.routing_ids_SB = None

    def _local_chunk(self, ids_BS: torch.Tensor, local_seq_len: int) -> torch.Tensor:
        """This rank's sequence chunk when the ids arrive full-length under sequence parallelism."""
        if ids_BS.shape[1] == local_seq_len:
            return ids_BS
        tp_size = self.attn_tp_group.size()
        if self.config.sequence_parallel and ids_BS.shape[1] == local_seq_len * tp_size:
            start = self.attn_tp_group.rank() * local_seq_len
            return ids_BS[:, start : start + local_seq_len]
        raise ValueError(
            f"routing ids cover {ids_BS.shape[1]} positions per sequence but this MoE layer sees {local_seq_len}"
        )
