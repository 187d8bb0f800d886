"""EMO mixture-of-experts decoder for Hugging Face transformers (`trust_remote_code` modelling file).

The layout and weight names are those of AI2's released EMO checkpoints (OLMoE names, pre-norm blocks, no
QK-norm). The routing is written to match emo_plugin's Megatron training model numerically in fp32:

- Router logits are computed in fp32. Routed experts are experts (and gate rows) [0, n_routed), shared experts
  the last `n_shared`.
- Routed gate weights are softmax(logits[:, :n_routed]) at the chosen top-(k - n_shared) experts, NOT
  renormalised over the chosen ones (`norm_topk_prob=False`, the released setting).
- Shared experts are always active with weight exactly 1.0. For `n_shared` = 1 this equals AI2's "softmax over
  the shared logits alone"; the shared rows of the gate are kept in the checkpoint but do not affect the output.
- Masking experts (`EmoForCausalLM.set_expert_mask`) and EMO document pools (`emo_inference_pool_size`) set
  logits to -inf BEFORE the softmax, so probabilities renormalise over the remaining experts exactly as they
  do in a physically pruned model.

Public routing API of `EmoForCausalLM`, for analysis and expert selection without reaching into the layers:
`num_routed_experts` / `num_routed_experts_per_token` (per layer), `set_expert_mask` / `expert_mask`,
`set_inference_pool_size`, `observe_routing` (a `RoutingEvent` per MoE layer and forward call),
`routed_expert_output`, and `training_only_kept_experts` (fine-tuning as if masked experts were pruned).

This file is copied next to `config.json`; it imports only torch, transformers' stable public classes, the
standard library and the config, and writes its own rotary/attention helpers because those moved between
transformers 4.57 and 5.x.
Attention is plain causal (plus padding) attention over the whole sequence, as in AI2's HF code.

KV cache across transformers versions: 4.57 hands the cache to `forward` as `past_key_values` (and adds
`cache_position`); newer releases hand it as `cache` and no longer send `cache_position`. Both forwards take either
name, and the outputs store the cache under the field name of the installed version, which is where `generate()`
looks for it between steps. Positions of new tokens are the cache length onwards (= 4.57's `cache_position`).
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_emo import EmoConfig

# Name of the cache field of transformers' model outputs: "cache" in new releases, "past_key_values" up to 5.x.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def either_cache(cache, past_key_values):
    """The KV cache given under the current name (`cache`) or the 4.57 one (`past_key_values`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two different KV caches: pass it as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


class EmoRMSNorm(nn.Module):
    """RMSNorm computed in fp32 whatever the activation dtype."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * normed).to(x.dtype)


def rotary_cos_sin(position_ids_BS, head_dim, theta, dtype):
    """cos/sin tables [B, S, head_dim] of standard (rotate-half, non-interleaved) RoPE.

    Computed from the config on every call instead of a cached buffer: it is cheap, and a non-persistent buffer
    would need special re-initialisation when transformers 5.x builds the model on the meta device.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids_BS.device) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs_BSW = position_ids_BS.float()[..., None] * inv_freq
    angles_BSD = torch.cat((freqs_BSW, freqs_BSW), dim=-1)
    return angles_BSD.cos().to(dtype), angles_BSD.sin().to(dtype)


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x_BASD, cos_BSD, sin_BSD):
    cos_B1SD, sin_B1SD = cos_BSD[:, None], sin_BSD[:, None]
    return x_BASD * cos_B1SD + rotate_half(x_BASD) * sin_B1SD


def document_ids_from_eos(input_ids_BS, eos_token_id, eos_grouping="ends"):
    """Ids of the documents of a packed batch, unique across the whole batch, shape [B, S].

    With `eos_grouping="ends"` a document is a maximal run of tokens within one sequence ending with (and
    including) an eos token, or cut by the sequence end. With "starts" every eos token instead begins the next
    document (AI2's training grouping), so an eos that is the last token of a row is a document of its own.
    Row b uses ids in [b*S, (b+1)*S), so ids never collide between sequences.
    """
    eos_ids = torch.tensor(eos_token_id, device=input_ids_BS.device).reshape(-1)
    is_eos_BS = torch.isin(input_ids_BS, eos_ids).long()
    if eos_grouping == "ends":
        doc_in_row_BS = is_eos_BS.cumsum(dim=1) - is_eos_BS
    else:  # an eos in the first position begins the row's first document: ids stay below S
        doc_in_row_BS = is_eos_BS.cumsum(dim=1) - is_eos_BS[:, :1]
    batch_size, seq_len = input_ids_BS.shape
    row_offset_B1 = torch.arange(batch_size, device=input_ids_BS.device)[:, None] * seq_len
    return doc_in_row_BS + row_offset_B1


@torch.no_grad()
def document_pool_mask(logits_TR, document_ids_T, token_valid_T, pool_size):
    """Bool [T, R]: is the routed expert in the pool of the token's document (EMO evaluation routing)?

    The pool of a document is the `pool_size` experts with the largest sum over its valid tokens of
    softmax(logits); ties go to the lower expert index. The pool is a choice, so no gradient flows through it.
    Pass logits with dropped experts already at -inf, so a masked and a pruned model pick the same pools:
    dropped experts rank last, so even a document without valid tokens (right padding after the last eos),
    whose scores are all zero, gets kept experts and its tokens stay finite. Document ids must lie in [0, T).
    """
    probs_TR = torch.softmax(logits_TR, dim=-1)
    if token_valid_T is not None:
        probs_TR = probs_TR * token_valid_T[:, None]
    # N: document slots (T of them, one per possible id); R: routed experts only, the gate's shared rows excluded
    scores_NR = torch.zeros_like(probs_TR).index_add_(0, document_ids_T, probs_TR)
    scores_NR = scores_NR.masked_fill(~torch.isfinite(logits_TR).any(dim=0), -1.0)
    ranked_NR = torch.sort(scores_NR, dim=-1, descending=True, stable=True).indices
    in_pool_NR = torch.zeros_like(scores_NR, dtype=torch.bool).scatter_(1, ranked_NR[:, :pool_size], True)
    return in_pool_NR[document_ids_T]


@dataclass(frozen=True)
class RoutingEvent:
    """What one MoE layer did in one forward call; T = batch × sequence tokens, K = routed experts per token.

    `probabilities_TR` is the fp32 router softmax over the layer's kept routed experts BEFORE any document pool:
    the distribution EMO pools and expert selection are derived from (masked experts have probability 0).
    `expert_idx_TK` / `gate_weights_TK` are the routed experts the layer actually used and their weights
    (masks and pools applied). `document_ids_T` is set only with document pools on; `token_valid_T` only with an
    attention mask (False = padding).
    """

    layer_idx: int
    hidden_TH: torch.Tensor
    probabilities_TR: torch.Tensor
    expert_idx_TK: torch.Tensor
    gate_weights_TK: torch.Tensor
    document_ids_T: torch.Tensor | None
    token_valid_T: torch.Tensor | None
    output_TH: torch.Tensor


class EmoAttention(nn.Module):
    """Causal multi-head / grouped-query attention with RoPE, no biases and no QK-norm."""

    def __init__(self, config: EmoConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x_BSH, cos_BSD, sin_BSD, allowed_B1QJ, past_key_values):
        batch_size, seq_len, _ = x_BSH.shape
        q = self.q_proj(x_BSH).view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x_BSH).view(batch_size, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x_BSH).view(batch_size, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos_BSD, sin_BSD), apply_rotary(k, cos_BSD, sin_BSD)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        group_size = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(group_size, dim=1), v.repeat_interleave(group_size, dim=1)
        out_BASD = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed_B1QJ)
        return self.o_proj(out_BASD.transpose(1, 2).reshape(batch_size, seq_len, -1))


class EmoExpert(nn.Module):
    """SwiGLU feed-forward expert: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: EmoConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class EmoSparseMoeBlock(nn.Module):
    """MoE layer of `n_experts` experts (routed + shared), the last `n_shared` of them shared (always on, weight 1)."""

    def __init__(self, config: EmoConfig, n_experts: int, n_shared: int, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_routed = n_experts - n_shared
        self.routed_per_token = config.num_experts_per_tok - n_shared
        self.norm_topk_prob = config.norm_topk_prob
        self.pool_size = config.emo_inference_pool_size
        self.gate = nn.Linear(config.hidden_size, n_experts, bias=False)
        self.experts = nn.ModuleList(EmoExpert(config) for _ in range(n_experts))
        self.kept_routed_experts_R = None
        self.routing_observer = None

    def set_kept_routed_experts(self, kept_R):
        """Keep only the routed experts where `kept_R` (bool [n_routed]) is True; None keeps all."""
        if kept_R is not None:
            kept_R = torch.as_tensor(kept_R, dtype=torch.bool)
            if kept_R.shape != (self.n_routed,) or int(kept_R.sum()) < self.routed_per_token:
                raise ValueError(
                    f"layer {self.layer_idx}: need a bool mask over {self.n_routed} routed experts keeping "
                    f">= {self.routed_per_token}"
                )
        self.kept_routed_experts_R = kept_R

    def kept_router_logits(self, x_TH):
        """fp32 router logits [T, n_routed] of the routed experts, masked-out experts at -inf."""
        logits_TR = F.linear(x_TH.float(), self.gate.weight.float())[:, : self.n_routed]
        if self.kept_routed_experts_R is not None:
            logits_TR = logits_TR.masked_fill(~self.kept_routed_experts_R.to(logits_TR.device), float("-inf"))
        return logits_TR

    def route(self, x_TH, document_ids_T=None, token_valid_T=None):
        """Gate weights [T, k - n_shared] (fp32) and indices [T, k - n_shared] of each token's routed experts."""
        logits_TR = self.kept_router_logits(x_TH)
        if self.pool_size is not None and self.pool_size < self.n_routed:
            in_pool_TR = document_pool_mask(logits_TR, document_ids_T, token_valid_T, self.pool_size)
            logits_TR = logits_TR.masked_fill(~in_pool_TR, float("-inf"))
        probs_TR = torch.softmax(logits_TR, dim=-1)
        gate_weights_TK, expert_idx_TK = torch.topk(probs_TR, self.routed_per_token, dim=-1)
        if self.norm_topk_prob:
            gate_weights_TK = gate_weights_TK / gate_weights_TK.sum(dim=-1, keepdim=True)
        return gate_weights_TK, expert_idx_TK

    def forward(self, x_BSH, document_ids_BS=None, token_valid_BS=None):
        """Σ gate·expert(x) over the chosen routed experts, plus every shared expert.

        Experts are visited in index order, so a physically pruned layer adds up the same terms in the same
        order as the full layer with the dropped experts masked.
        """
        x_TH = x_BSH.reshape(-1, x_BSH.shape[-1])
        document_ids_T = None if document_ids_BS is None else document_ids_BS.reshape(-1)
        token_valid_T = None if token_valid_BS is None else token_valid_BS.reshape(-1)
        gate_weights_TK, expert_idx_TK = self.route(x_TH, document_ids_T, token_valid_T)
        out_TH = torch.zeros_like(x_TH)
        for expert_idx in range(self.n_routed):
            token_idx, choice_idx = torch.where(expert_idx_TK == expert_idx)
            gate_weight = gate_weights_TK[token_idx, choice_idx, None].to(x_TH.dtype)
            out_TH.index_add_(0, token_idx, self.experts[expert_idx](x_TH[token_idx]) * gate_weight)
        for shared_expert in self.experts[self.n_routed :]:
            out_TH = out_TH + shared_expert(x_TH)
        if self.routing_observer is not None:
            probabilities_TR = torch.softmax(self.kept_router_logits(x_TH), dim=-1)
            self.routing_observer(
                RoutingEvent(
                    self.layer_idx, x_TH, probabilities_TR, expert_idx_TK, gate_weights_TK, document_ids_T,
                    token_valid_T, out_TH,
                )
            )
        return out_TH.view_as(x_BSH)


class EmoDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + moe(norm(x))."""

    def __init__(self, config: EmoConfig, layer_idx: int):
        super().__init__()
        n_experts, n_shared = config.expert_slots(layer_idx)
        self.pre_attention_layernorm = EmoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = EmoAttention(config, layer_idx)
        self.pre_feedforward_layernorm = EmoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = EmoSparseMoeBlock(config, n_experts, n_shared, layer_idx)

    def forward(self, x_BSH, cos_BSD, sin_BSD, allowed_B1QJ, past_key_values, document_ids_BS, token_valid_BS):
        attn_in_BSH = self.pre_attention_layernorm(x_BSH)
        x_BSH = x_BSH + self.self_attn(attn_in_BSH, cos_BSD, sin_BSD, allowed_B1QJ, past_key_values)
        return x_BSH + self.mlp(self.pre_feedforward_layernorm(x_BSH), document_ids_BS, token_valid_BS)


class EmoPreTrainedModel(PreTrainedModel):
    """Shared transformers plumbing; weight init is transformers' default (normal(initializer_range), norms 1)."""

    config_class = EmoConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["EmoDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]


class EmoModel(EmoPreTrainedModel):
    """Embeddings, decoder layers and final norm; returns the last hidden state."""

    def __init__(self, config: EmoConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(EmoDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = EmoRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        cache=None,
        **kwargs,
    ):
        """`attention_mask` is the usual 2-D padding mask over past + current tokens (1 = real token).

        With `emo_inference_pool_size` set, document pools are computed from the tokens of THIS call only:
        exact for a full forward pass (scoring, prefill), but during cached decoding each new token forms its
        own pool. The KV cache comes as `cache` or `past_key_values` (see the module docstring). Other
        transformers keyword arguments (e.g. `cache_position`, `return_dict`) are accepted and not needed:
        positions come from the cache length.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        past_key_values = either_cache(cache, past_key_values)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        batch_size, seq_len, _ = inputs_embeds.shape
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        query_pos_Q = torch.arange(past_len, past_len + seq_len, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = query_pos_Q[None].expand(batch_size, -1)
        allowed_B1QJ = self._attention_allowed(query_pos_Q, past_len + seq_len, attention_mask, batch_size)
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos_BSD, sin_BSD = rotary_cos_sin(position_ids, head_dim, self.config.rope_theta, inputs_embeds.dtype)

        document_ids_BS = None
        if self.config.emo_inference_pool_size is not None:
            if input_ids is None:
                raise ValueError("EMO document pools need input_ids to find the eos-delimited documents")
            document_ids_BS = document_ids_from_eos(
                input_ids, self.config.eos_token_id, self.config.emo_eos_grouping
            )
        token_valid_BS = None if attention_mask is None else attention_mask[:, -seq_len:].bool()

        hidden_BSH = inputs_embeds
        all_hidden_states = (hidden_BSH,) if output_hidden_states else None
        for layer in self.layers:
            layer_args = (hidden_BSH, cos_BSD, sin_BSD, allowed_B1QJ, past_key_values, document_ids_BS, token_valid_BS)
            if self.gradient_checkpointing and self.training:
                hidden_BSH = self._gradient_checkpointing_func(layer.__call__, *layer_args)
            else:
                hidden_BSH = layer(*layer_args)
            if output_hidden_states:
                all_hidden_states += (hidden_BSH,)
        hidden_BSH = self.norm(hidden_BSH)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_BSH,)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_BSH,
            hidden_states=all_hidden_states,
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )

    @staticmethod
    def _attention_allowed(query_pos_Q, num_keys, attention_mask, batch_size):
        """Bool mask [B, 1, Q, J] (True = may attend): causal, padding keys removed.

        Each token may always attend to itself, so rows of padding queries are never empty (SDPA would return
        NaN for them); padding outputs are meaningless either way.
        """
        key_pos_J = torch.arange(num_keys, device=query_pos_Q.device)
        allowed_QJ = key_pos_J[None, :] <= query_pos_Q[:, None]
        if attention_mask is None:
            return allowed_QJ[None, None].expand(batch_size, 1, -1, -1)
        key_valid_B11J = attention_mask[:, None, None, :num_keys].bool()
        is_self_QJ = key_pos_J[None, :] == query_pos_Q[:, None]
        return (allowed_QJ & key_valid_B11J) | is_self_QJ


class EmoForCausalLM(EmoPreTrainedModel, GenerationMixin):
    """EMO decoder with a language-model head; supports `generate()` with a DynamicCache."""

    def __init__(self, config: EmoConfig):
        super().__init__(config)
        self.model = EmoModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # ----------------------------------------------------------------------------------------- routing API

    def _moe_block(self, layer_idx: int) -> EmoSparseMoeBlock:
        if not 0 <= layer_idx < len(self.model.layers):
            raise IndexError(f"layer {layer_idx} does not exist: the model has {len(self.model.layers)} layers")
        return self.model.layers[layer_idx].mlp

    def num_routed_experts(self, layer_idx: int) -> int:
        """Routed experts of a layer (shared experts excluded; a pruned model's layers may differ)."""
        return self._moe_block(layer_idx).n_routed

    def num_routed_experts_per_token(self, layer_idx: int) -> int:
        """Routed experts each token of a layer uses: `num_experts_per_tok` minus the layer's shared experts."""
        return self._moe_block(layer_idx).routed_per_token

    def set_expert_mask(self, kept_routed_experts_by_layer):
        """Route only among kept experts: {layer index: bool tensor [n_routed of that layer], True = kept}.

        Dropped experts get -inf router logits before the softmax, so the logits equal those of a checkpoint
        physically pruned to the kept experts. Layers missing from the dict, or `None` for the whole argument,
        keep all experts. Shared experts are always kept. A mask of the wrong size, or one keeping fewer
        experts than a token uses, raises ValueError.
        """
        for layer_idx, layer in enumerate(self.model.layers):
            kept_R = None if kept_routed_experts_by_layer is None else kept_routed_experts_by_layer.get(layer_idx)
            layer.mlp.set_kept_routed_experts(kept_R)

    def expert_mask(self, layer_idx: int):
        """The layer's current bool mask over its routed experts (True = kept), or None when all are kept."""
        return self._moe_block(layer_idx).kept_routed_experts_R

    def set_inference_pool_size(self, pool_size: int | None) -> None:
        """Turn EMO's document pools on (each document routes among its `pool_size` experts) or off (None).

        Sets `config.emo_inference_pool_size` too, so a saved model keeps the setting. A pool smaller than the
        routed experts a token needs is refused with ValueError: top-k could not be filled from it.
        """
        if pool_size is not None:
            if isinstance(pool_size, bool) or not isinstance(pool_size, int):
                raise ValueError(f"inference pool size must be an integer or None, got {pool_size!r}")
            for layer_idx, layer in enumerate(self.model.layers):
                if pool_size < layer.mlp.routed_per_token:
                    raise ValueError(
                        f"inference pool size {pool_size} < {layer.mlp.routed_per_token} routed experts per token "
                        f"of layer {layer_idx}: each token's top-k must fit in its document's pool"
                    )
        for layer in self.model.layers:
            layer.mlp.pool_size = pool_size
        self.config.emo_inference_pool_size = pool_size

    @contextlib.contextmanager
    def observe_routing(self, observer, layers=None):
        """Within the block, call `observer(RoutingEvent)` after each forward of the MoE layers in `layers`
        (indices; None = all). The routing itself is unchanged; the observer may raise to stop a forward early.
        """
        layer_indices = range(len(self.model.layers)) if layers is None else layers
        blocks = [self._moe_block(layer_idx) for layer_idx in layer_indices]
        for block in blocks:
            block.routing_observer = observer
        try:
            yield self
        finally:
            for block in blocks:
                block.routing_observer = None

    def routed_expert_output(self, layer_idx: int, expert_idx: int, x_TH: torch.Tensor) -> torch.Tensor:
        """The unweighted output of one routed expert of a layer on MoE inputs `x_TH` (as in `RoutingEvent`)."""
        block = self._moe_block(layer_idx)
        if not 0 <= expert_idx < block.n_routed:
            raise IndexError(f"layer {layer_idx} has routed experts 0..{block.n_routed - 1}, not {expert_idx}")
        return block.experts[expert_idx](x_TH)

    @contextlib.contextmanager
    def training_only_kept_experts(self):
        """Within the block, train as if the masked experts were pruned: their parameters are frozen and the
        router rows of masked experts get zero gradient. Frozen flags and gradient hooks are undone on exit."""
        frozen, hooks = [], []
        try:
            for layer in self.model.layers:
                block = layer.mlp
                if block.kept_routed_experts_R is None:
                    continue
                for expert_idx in torch.where(~block.kept_routed_experts_R)[0].tolist():
                    for param in block.experts[expert_idx].parameters():
                        if param.requires_grad:
                            param.requires_grad_(False)
                            frozen.append(param)
                trained_rows = torch.ones(block.gate.weight.shape[0], dtype=torch.bool)
                trained_rows[: block.n_routed] = block.kept_routed_experts_R
                row_scale = trained_rows.to(block.gate.weight.device, block.gate.weight.dtype)[:, None]
                hooks.append(block.gate.weight.register_hook(lambda grad, scale=row_scale: grad * scale))
            yield self
        finally:
            for hook in hooks:
                hook.remove()
            for param in frozen:
                param.requires_grad_(True)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values: Cache | None = None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        logits_to_keep=0,
        cache: Cache | None = None,
        **kwargs,
    ):
        """Logits of the last `logits_to_keep` positions (0 = all) and, with `labels`, the shifted
        next-token cross-entropy (labels equal to -100 are ignored). The KV cache comes as `cache` or
        `past_key_values`, and is returned under the installed transformers' name (`CACHE_FIELD`)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=either_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_BSH = outputs.last_hidden_state
        logits_BSV = self.lm_head(hidden_BSH[:, -logits_to_keep:] if logits_to_keep else hidden_BSH)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits_BSV[:, :-1].float().reshape(-1, logits_BSV.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits_BSV.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits_BSV,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )


__all__ = ["EmoForCausalLM", "EmoModel", "EmoPreTrainedModel", "RoutingEvent"]
