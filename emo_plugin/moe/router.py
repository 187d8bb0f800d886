"""``EmoRouter``: Megatron's ``TopKRouter`` adapted to EMO document pools.

A thin adapter: the pool math lives in ``routing.py`` (pure), the gates come from Megatron's own
``topk_routing_with_score_function`` (so ``moe_router_fusion`` and scaling options keep working), the z-loss
from ``TopKRouter.apply_z_loss`` and the loss-gradient injection from ``MoEAuxLossAutoScaler``. What is EMO's
own: per-document pools, the DP-global load-balancing loss (``load_balancing.py``) and the statistics.

The routing ids for the current forward are handed over by ``EmoMoELayer`` (see ``routing_ids.py``). Shape
suffixes: S sequence positions, B sequences, T tokens (router order), N document slots, E expert slots (routed +
inert, Megatron's ``num_moe_experts``), R routed experts, C statistic columns (R values, then a token count).
"""

from __future__ import annotations

import torch
from megatron.core.transformer.moe.moe_logging import get_moe_metrics_tracker
from megatron.core.transformer.moe.moe_utils import (
    MoEAuxLossAutoScaler,
    router_gating_linear,
    topk_routing_with_score_function,
)
from megatron.core.transformer.moe.router import TopKRouter

from emo_plugin.megatron_compat import aux_loss_gradient_averaging_ranks
from emo_plugin.moe.config import EmoTransformerConfig
from emo_plugin.moe.load_balancing import expert_counts, global_load_balancing_loss, local_score_sums
from emo_plugin.moe.metrics import record_statistics, routing_statistics
from emo_plugin.moe.routing import (
    RankLimit,
    document_slots,
    draw_pool_sizes,
    padding_slots,
    pool_masked_logits,
    with_unrestricted_padding,
)
from emo_plugin.moe.routing_ids import split_routing_ids
from emo_plugin.moe.traffic import dispatch_traffic

_DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


class EmoRouter(TopKRouter):
    """Routes every token to ``moe_router_topk`` experts inside its document's expert pool."""

    def __init__(self, config: EmoTransformerConfig, pg_collection=None, is_mtp_layer: bool = False) -> None:
        if not isinstance(config, EmoTransformerConfig):
            raise TypeError(f"EmoRouter needs an EmoTransformerConfig, got {type(config).__name__}")
        super().__init__(config=config, pg_collection=pg_collection, is_mtp_layer=is_mtp_layer)
        self.routing_ids_SB: torch.Tensor | None = None
        self.ep_group = pg_collection.ep
        emo = config.emo
        self.rank_limit = None if emo.pool_max_ranks is None else RankLimit(emo.pool_rank_groups, emo.pool_max_ranks)
        # Load-balancing counts accumulated over the micro-batches of one step (lb_scope="global_batch").
        self.register_buffer(
            "lb_accumulated_counts", torch.zeros(config.num_selectable_experts + 1), persistent=False
        )

    # -- Megatron hooks -------------------------------------------------------------------------------
    def gating(self, input: torch.Tensor) -> torch.Tensor:
        """Router logits; moves the weight to the input's device (Megatron assumes CUDA here)."""
        if self.weight.device != input.device:
            self.weight.data = self.weight.data.to(input.device)
            if self.bias is not None:
                self.bias.data = self.bias.data.to(input.device)
        dtype = _DTYPES.get(self.config.moe_router_dtype, input.dtype)
        return router_gating_linear(input, self.weight, self.bias, dtype)

    def reset_global_aux_loss_tracker(self) -> None:
        """Called by ``finalize_model_grads`` once per step (see ``megatron_compat.step_reset_load_balancing_type``)."""
        self.lb_accumulated_counts.zero_()

    def routing(self, logits: torch.Tensor, padding_mask: torch.Tensor | None = None):
        seq_len, batch = logits.shape[:2]
        emo = self.config.emo
        selectable = self.config.num_selectable_experts
        logits_TE = logits.view(-1, self.config.num_moe_experts)
        segments_T, salts_T = split_routing_ids(self._routing_ids(seq_len, batch, logits.device).reshape(-1))
        valid_T = segments_T > 0

        slots_T = document_slots(segments_T, batch, emo.max_documents_per_sequence)
        num_doc_slots = batch * (emo.max_documents_per_sequence + 1)
        is_document_N = ~padding_slots(num_doc_slots, emo.max_documents_per_sequence, logits.device)
        pool_size_N = with_unrestricted_padding(
            self._pool_sizes(slots_T, salts_T, num_doc_slots), emo.max_documents_per_sequence, selectable
        )

        masked_TE, pool_NE, doc_stats_NC = pool_masked_logits(
            logits_TE,
            slots_T,
            pool_size_N,
            num_selectable=selectable,
            reduce_doc_stats=self._sum_over_sequence_shards,
            rank_limit=self.rank_limit if self.training else None,  # a training-time dispatch constraint
        )
        masked_TE = self.apply_z_loss(masked_TE, padding_mask=~valid_T)
        probs_TE, routing_map_TE = topk_routing_with_score_function(
            masked_TE,
            self.topk,
            use_pre_softmax=True,
            scaling_factor=self.config.moe_router_topk_scaling_factor,
            score_function="softmax",
            fused=self.config.moe_router_fusion,
        )
        if self.training and torch.is_grad_enabled():
            scores_TR = torch.softmax(masked_TE[:, :selectable].float(), dim=-1)
            probs_TE, global_counts_R = self._apply_load_balancing(probs_TE, scores_TR, routing_map_TE, valid_T)
            stats = routing_statistics(
                scores_TR=scores_TR,
                valid_T=valid_T,
                pool_size_N=pool_NE.sum(dim=-1),
                is_document_N=is_document_N,
                doc_scores_NR=doc_stats_NC[:, :-1],
                doc_mass_N=doc_stats_NC[:, -1],
                global_counts_R=global_counts_R,
            )
            if self.ep_group.size() > 1:
                stats |= dispatch_traffic(
                    routing_map_TE,
                    ep_rank=self.ep_group.rank(),
                    ep_size=self.ep_group.size(),
                    bytes_per_token=self.config.hidden_size * self.config.params_dtype.itemsize,
                )
            record_statistics(
                stats,
                layer_number=self.layer_number,
                num_layers=self._num_logged_layers(),
                avg_group=self.tp_dp_cp_group,
            )
        return probs_TE, routing_map_TE

    # -- EMO pieces -----------------------------------------------------------------------------------
    def _routing_ids(self, seq_len: int, batch: int, device: torch.device) -> torch.Tensor:
        ids_SB = self.routing_ids_SB
        if ids_SB is None:
            if self.training:
                raise RuntimeError(
                    "EmoRouter got no routing ids in training: pass "
                    "padding_mask=emo_plugin.moe.routing_ids.build_routing_ids(...) to GPTModel.forward "
                    "(it reaches the router through EmoMoELayer)"
                )
            # Evaluation without ids: each sequence is one document with the fixed eval pool.
            return torch.ones(seq_len, batch, dtype=torch.long, device=device)
        if tuple(ids_SB.shape) != (seq_len, batch):
            raise ValueError(f"routing ids have shape {tuple(ids_SB.shape)}, router tokens are {(seq_len, batch)}")
        return ids_SB

    def _pool_sizes(self, slots_T: torch.Tensor, salts_T: torch.Tensor, num_doc_slots: int) -> torch.Tensor:
        emo = self.config.emo
        if not self.training:
            return torch.full((num_doc_slots,), emo.pool_eval, dtype=torch.long, device=slots_T.device)
        salts_N = torch.zeros(num_doc_slots, dtype=torch.long, device=slots_T.device).scatter_(0, slots_T, salts_T)
        pool_min, pool_max = emo.pool_range(self.layer_number)
        return draw_pool_sizes(
            salts_N, layer_number=self.layer_number or 0, seed=emo.seed, pool_min=pool_min, pool_max=pool_max
        )

    def _sum_over_sequence_shards(self, doc_stats_NC: torch.Tensor) -> torch.Tensor:
        """All pieces of a sequence (TP shards under SP, CP shards) must agree on each document's pool."""
        if self.tp_cp_group.size() > 1:
            torch.distributed.all_reduce(doc_stats_NC, group=self.tp_cp_group)
        return doc_stats_NC

    def _apply_load_balancing(self, probs_TE, scores_TR, routing_map_TE, valid_T):
        selectable = scores_TR.shape[-1]
        counts_C = torch.cat(
            [expert_counts(routing_map_TE[:, :selectable], valid_T), valid_T.sum(dtype=torch.float32).view(1)]
        )
        if self.tp_dp_cp_group.size() > 1:
            torch.distributed.all_reduce(counts_C, group=self.tp_dp_cp_group)
        if self.config.emo.lb_scope == "global_batch":
            self.lb_accumulated_counts += counts_C
            counts_C = self.lb_accumulated_counts.clone()
        global_counts_R, global_tokens = counts_C[:-1], counts_C[-1]
        coeff = self.config.emo.lb_coeff
        if coeff > 0:
            averaging_ranks = aux_loss_gradient_averaging_ranks(self.tp_dp_cp_group.size(), self.tp_cp_group.size())
            loss = global_load_balancing_loss(
                local_score_sums(scores_TR, valid_T),
                global_counts_R,
                global_tokens,
                topk=self.topk,
                grad_average_ranks=averaging_ranks,
            )
            probs_TE = MoEAuxLossAutoScaler.apply(probs_TE, coeff * loss)
            # Summed over all ranks, loss / averaging_ranks is the global loss L.
            get_moe_metrics_tracker().record(
                "load_balancing_loss",
                loss / averaging_ranks,
                self.layer_number,
                self._num_logged_layers(),
                reduce_group=self.tp_dp_cp_group,
                needs_dp_avg=False,
            )
        return probs_TE, global_counts_R

    def _num_logged_layers(self) -> int:
        return self.config.num_layers + (self.config.mtp_num_layers or 0)
