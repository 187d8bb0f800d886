"""Typed, validated EMO configuration.

Two layers, validated in one place before any model is built:

* ``EmoRouterConfig`` holds the EMO method's own knobs (pool sizes, shared experts, loss coefficients).
* ``EmoTransformerConfig`` is Megatron's ``TransformerConfig`` with an ``emo`` field. Its ``__post_init__``
  checks the EMO fields, refuses Megatron options that would silently drop the document ids on their way to
  the router, and derives the Megatron fields EMO fixes (shared-expert width, z-loss coefficient).

Vocabulary used throughout: *routed experts* (R, ``num_selectable_experts``) are the experts a token may choose;
*expert slots* (E, Megatron's ``num_moe_experts``, the router's rows) are the routed experts followed by
``emo.num_inert_experts`` inert padding slots that are never selected. Shared experts run as Megatron's
shared-expert module and are counted by neither. ``moe_router_topk`` = routed experts per token (k − S in the
paper's notation, where k counts the shared experts too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron.core.transformer.transformer_config import TransformerConfig

from emo_plugin import expert_blocks
from emo_plugin.errors import ConfigError
from emo_plugin.megatron_compat import step_reset_load_balancing_type

LoadBalancingScope = Literal["micro_batch", "global_batch"]


@dataclass(kw_only=True)
class EmoRouterConfig:
    """EMO document-pool routing. The recipe fields have no defaults: they come from a model record
    (``emo_plugin.model.megatron_config.transformer_config``), whose named sizes are the only defaults."""

    pool_min: int
    """Smallest per-document expert pool drawn in training (routed experts). Must be ≥ moe_router_topk."""
    pool_max: int
    """Largest pool drawn in training; a pool ≥ the number of routed experts means 'unrestricted'."""
    pool_eval: int
    """Fixed pool size in evaluation (``model.eval()``)."""
    pool_min_per_layer: tuple[int, ...] | None = None
    """``pool_min`` of each layer (first layer first); ``None``: ``pool_min`` everywhere."""
    pool_max_per_layer: tuple[int, ...] | None = None
    """``pool_max`` of each layer; e.g. ≥ the routed experts in early layers leaves them unrestricted."""
    pool_max_ranks: int | None = None
    """Rank-limited pools (``None``: off): in training, each document's pool is drawn only from the experts of the
    ``pool_max_ranks`` expert groups with the largest summed router probability for the document (as DeepSeek-V3
    limits a token to M nodes), so its tokens are dispatched to at most that many expert-parallel ranks."""
    pool_rank_groups: int | None = None
    """Number of contiguous expert groups ``pool_max_ranks`` counts (expert slots ``g·E/G … (g+1)·E/G − 1``): the
    expert-parallel size the limit is for. A model property, not the run's layout, so resharding a checkpoint to
    another EP size keeps the function; at ``expert_model_parallel_size`` = G each group is one rank's experts."""
    num_shared_experts: int
    """Always-active experts with gate weight 1, run as Megatron's shared-expert module."""
    lb_coeff: float
    """Coefficient of the global (data-parallel) Switch load-balancing loss."""
    z_loss_coeff: float
    """Coefficient of the router z-loss on the pool-masked logits (0 disables it)."""
    max_documents_per_sequence: int
    """Static bound on document segments per sequence: it sizes the per-document score buffer so routing
    has no data-dependent shapes. Exceeding it is reported when routing ids are built."""
    num_inert_experts: int = 0
    """Trailing expert slots that can never be selected (zero probability, no load). They pad the expert slots
    to a multiple of the expert-parallel size, e.g. AI2's 127 routed experts to 128 slots for EP 8 when importing."""
    lb_scope: LoadBalancingScope = "micro_batch"
    """Expert counts for the load-balancing loss: summed over data-parallel ranks per micro-batch (AI2), or
    also accumulated over the micro-batches of one optimizer step ("global_batch")."""
    seed: int = 1234
    """Seed that, with each document's salt, makes random pool sizes reproducible on every rank."""

    def validate(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"emo.{name}={getattr(self, name)!r}: {why}")

        for name in ("pool_min", "pool_max", "pool_eval", "max_documents_per_sequence"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("num_shared_experts", "num_inert_experts"):
            if getattr(self, name) < 0:
                raise bad(name, "must be ≥ 0")
        if self.pool_max < self.pool_min:
            raise bad("pool_max", f"must be ≥ emo.pool_min={self.pool_min}")
        for name in ("lb_coeff", "z_loss_coeff"):
            if getattr(self, name) < 0:
                raise bad(name, "must be ≥ 0")
        if (self.pool_max_ranks is None) != (self.pool_rank_groups is None):
            missing = "pool_rank_groups" if self.pool_rank_groups is None else "pool_max_ranks"
            raise bad(missing, "rank-limited pools need both emo.pool_max_ranks (M) and emo.pool_rank_groups (the "
                      "expert-parallel size M counts ranks of); set both or neither")
        if self.pool_max_ranks is not None:
            if self.pool_rank_groups < 2:
                raise bad("pool_rank_groups", "must be ≥ 2: with one group there is nothing to limit")
            if not 1 <= self.pool_max_ranks < self.pool_rank_groups:
                raise bad("pool_max_ranks", f"must be in [1, emo.pool_rank_groups={self.pool_rank_groups}): "
                          "a limit of all groups restricts nothing; unset both to turn the limit off")
        if self.lb_scope not in ("micro_batch", "global_batch"):
            raise bad("lb_scope", "expected 'micro_batch' or 'global_batch'")

    def pool_range(self, layer_number: int | None) -> tuple[int, int]:
        """(pool_min, pool_max) of the layer with Megatron's global, 1-based ``layer_number`` (the router's; under
        pipeline parallelism it already counts the earlier stages' layers)."""
        per_layer = self.pool_min_per_layer is not None or self.pool_max_per_layer is not None
        if layer_number is None and per_layer:
            raise ValueError("per-layer pool ranges need the router's layer number (Megatron's set_layer_number)")
        low = self.pool_min if self.pool_min_per_layer is None else self.pool_min_per_layer[layer_number - 1]
        high = self.pool_max if self.pool_max_per_layer is None else self.pool_max_per_layer[layer_number - 1]
        return low, high


@dataclass
class EmoTransformerConfig(TransformerConfig):
    """Megatron ``TransformerConfig`` + EMO routing. Build EMO models only from this class."""

    emo: EmoRouterConfig | None = None

    def __post_init__(self) -> None:
        if self.emo is None:
            raise ConfigError("emo is not set: build EMO configs from a model record "
                                 "(emo_plugin.model.megatron_config.transformer_config)")
        if isinstance(self.emo, dict):
            self.emo = EmoRouterConfig(**self.emo)
        self.emo.validate()
        self._check_moe_shape()
        self._derive_megatron_fields()
        self._refuse_options_that_drop_document_ids()
        super().__post_init__()

    @property
    def num_selectable_experts(self) -> int:
        """R, the routed experts a token may choose: the expert slots (``num_moe_experts``) less the inert ones."""
        return expert_blocks.num_selectable_experts(self.num_moe_experts, self.emo.num_inert_experts)

    def _check_moe_shape(self) -> None:
        emo = self.emo
        if not self.num_moe_experts:
            raise ConfigError("num_moe_experts must be set: EMO routes over mixture-of-experts layers")
        if emo.num_inert_experts >= self.num_moe_experts:
            raise ConfigError(
                f"emo.num_inert_experts={emo.num_inert_experts} leaves no selectable expert out of "
                f"num_moe_experts={self.num_moe_experts}"
            )
        if self.moe_router_topk > self.num_selectable_experts:
            raise ConfigError(
                f"moe_router_topk={self.moe_router_topk} exceeds the {self.num_selectable_experts} selectable "
                "routed experts"
            )
        if emo.pool_min < self.moe_router_topk:
            raise ConfigError(
                f"emo.pool_min={emo.pool_min} must be ≥ moe_router_topk={self.moe_router_topk} (routed experts "
                "per token, k − shared): every token must find that many experts in its document's pool"
            )
        if emo.pool_eval < self.moe_router_topk:
            raise ConfigError(f"emo.pool_eval={emo.pool_eval} must be ≥ moe_router_topk={self.moe_router_topk}")
        self._check_per_layer_pools()
        self._check_rank_limit()
        if self.num_moe_experts % self.expert_model_parallel_size:
            raise ConfigError(
                f"expert_model_parallel_size={self.expert_model_parallel_size} does not divide "
                f"num_moe_experts={self.num_moe_experts}; pad with emo.num_inert_experts to a multiple"
            )

    def _check_per_layer_pools(self) -> None:
        """One entry per layer, each range as valid as the single one; a list replaces its scalar field."""
        emo = self.emo
        if emo.pool_min_per_layer is None and emo.pool_max_per_layer is None:
            return  # one range for every layer, checked with the scalar fields
        for name in ("pool_min_per_layer", "pool_max_per_layer"):
            values = getattr(emo, name)
            if values is not None and len(values) != self.num_layers:
                raise ConfigError(
                    f"emo.{name}={list(values)!r}: expected one entry per layer, {self.num_layers} (num_layers)"
                )
        for layer in range(1, self.num_layers + 1):
            low, high = emo.pool_range(layer)
            if low < self.moe_router_topk:  # only a per-layer entry can get here: pool_min is checked above
                raise ConfigError(
                    f"emo.pool_min_per_layer: layer {layer - 1} has pool_min {low}, below moe_router_topk="
                    f"{self.moe_router_topk} (every token must find that many experts in its document's pool)"
                )
            if high < low:
                name = "pool_max_per_layer" if emo.pool_max_per_layer is not None else "pool_min_per_layer"
                raise ConfigError(f"emo.{name}: layer {layer - 1} has pool_max {high}, below its pool_min {low}")

    def rank_group_capacities(self) -> list[int]:
        """Routed experts in each rank-limit group (the inert padding slots are the trailing expert slots)."""
        return expert_blocks.selectable_per_block(
            self.num_moe_experts, self.num_selectable_experts, self.emo.pool_rank_groups
        )

    def _check_rank_limit(self) -> None:
        """The groups must tile the expert slots, sit on whole ranks, and always hold the smallest pool."""
        emo = self.emo
        if emo.pool_max_ranks is None:
            return
        groups, experts, ep = emo.pool_rank_groups, self.num_moe_experts, self.expert_model_parallel_size
        if experts % groups:
            raise ConfigError(f"emo.pool_rank_groups={groups} does not divide num_moe_experts={experts}: the "
                              "rank-limit groups must be equal blocks of experts")
        if groups % ep and ep % groups:
            raise ConfigError(
                f"expert_model_parallel_size={ep} and emo.pool_rank_groups={groups}: one must divide the other, "
                "or a rank-limit group straddles ranks and the limit bounds nothing; train with EP = "
                f"{groups} (or a divisor/multiple of it)")
        capacity = sum(sorted(self.rank_group_capacities())[: emo.pool_max_ranks])
        field, smallest_pool = (("pool_min_per_layer", max(emo.pool_min_per_layer)) if emo.pool_min_per_layer
                                else ("pool_min", emo.pool_min))
        if capacity < smallest_pool:
            raise ConfigError(
                f"emo.pool_max_ranks={emo.pool_max_ranks} × {experts // groups} experts per group "
                f"(emo.pool_rank_groups={groups}) holds {capacity} selectable experts in the worst case, fewer "
                f"than a training pool may need (emo.{field}: {smallest_pool}); "
                "raise emo.pool_max_ranks or lower the pool minimum")

    def _derive_megatron_fields(self) -> None:
        emo = self.emo
        ffn = self.moe_ffn_hidden_size or self.ffn_hidden_size
        shared_width = emo.num_shared_experts * ffn if emo.num_shared_experts else None
        if self.moe_shared_expert_intermediate_size not in (None, shared_width):
            raise ConfigError(
                f"moe_shared_expert_intermediate_size={self.moe_shared_expert_intermediate_size} disagrees with "
                f"emo.num_shared_experts={emo.num_shared_experts} × expert FFN {ffn} = {shared_width}; "
                "leave it unset, EMO derives it"
            )
        self.moe_shared_expert_intermediate_size = shared_width
        if self.moe_shared_expert_gate:
            raise ConfigError("moe_shared_expert_gate=True: EMO's shared experts have a fixed gate weight of 1")
        z_coeff = emo.z_loss_coeff or None
        if self.moe_z_loss_coeff not in (None, z_coeff):
            raise ConfigError(
                f"moe_z_loss_coeff={self.moe_z_loss_coeff}: set emo.z_loss_coeff instead (EMO applies the "
                "z-loss to the pool-masked logits)"
            )
        self.moe_z_loss_coeff = z_coeff
        if self.moe_router_score_function != "softmax":
            raise ConfigError(
                f"moe_router_score_function={self.moe_router_score_function!r}: EMO gates are the softmax over "
                "the document pool; only 'softmax' is supported"
            )
        self.moe_router_pre_softmax = True
        aux = self.moe_aux_loss_coeff
        if (any(aux) if isinstance(aux, list) else aux) or self.moe_router_load_balancing_type in (
            "sinkhorn",
            "quantile_balancing",
        ):
            raise ConfigError(
                f"moe_router_load_balancing_type={self.moe_router_load_balancing_type!r} with "
                f"moe_aux_loss_coeff={aux}: EMO owns load balancing; set emo.lb_coeff instead"
            )
        # With coefficient 0 this type only makes finalize_model_grads call the router's reset hook once per step.
        self.moe_router_load_balancing_type = (
            step_reset_load_balancing_type() if emo.lb_scope == "global_batch" else "none"
        )
        self.moe_aux_loss_coeff = 0.0

    def _refuse_options_that_drop_document_ids(self) -> None:
        refusals = {
            "mlp_chunks_for_training": (self.mlp_chunks_for_training != 1, "chunked MLP drops the padding_mask"),
            "overlap_moe_expert_parallel_comm": (
                self.overlap_moe_expert_parallel_comm,
                "the fine-grained EP-overlap schedule routes without the padding_mask",
            ),
            "cuda_graph_impl": (
                self.cuda_graph_impl != "none",
                "CUDA-graph replay does not carry the per-micro-batch document ids",
            ),
            "moe_router_enable_expert_bias": (
                self.moe_router_enable_expert_bias,
                "expert bias is broken with padding masks in megatron-core 0.19.2 and not part of EMO",
            ),
            "moe_expert_capacity_factor": (
                self.moe_expert_capacity_factor is not None,
                "token dropping breaks the 'exactly k experts per token' contract",
            ),
            "moe_router_num_groups": (
                self.moe_router_num_groups is not None,
                "group-limited routing conflicts with pools",
            ),
            "moe_input_jitter_eps": (self.moe_input_jitter_eps is not None, "input jitter is not part of EMO"),
            "calculate_per_token_loss": (
                self.calculate_per_token_loss,
                "EMO's load-balancing gradient is scaled for Megatron's per-micro-batch mean loss",
            ),
        }
        for name, (refused, why) in refusals.items():
            if refused:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not supported with EMO: {why}")
