"""Configuration of EMO mixture-of-experts checkpoints in the Hugging Face format.

Field names follow OLMoE and AI2's released EMO checkpoints (`model_type: "emo"`), so a checkpoint written by
emo_plugin loads with AI2's code and vice versa. This file is copied next to `config.json` and loaded with
`trust_remote_code=True`, so it imports only `transformers` and the standard library.

Hugging Face experts (routed + shared): each MoE layer has `n_slots` experts; the LAST `n_shared` of them are
shared experts (always active, weight 1.0) and the first `n_slots - n_shared` are routed. There are no inert
experts here, so these are not Megatron's expert slots (routed + inert). `num_experts_per_tok` counts the shared
experts too, so every token uses `num_experts_per_tok - n_shared` routed experts.
"""

from transformers import PretrainedConfig


class EmoConfig(PretrainedConfig):
    """Configuration of an EMO decoder (pre-norm RMSNorm blocks, RoPE attention, SwiGLU experts).

    Defaults are the released EMO-1B/14B shape. Fields beyond OLMoE's:

    - `num_shared_experts`: how many of a layer's last Hugging Face experts are shared experts.
    - `num_experts_per_layer` / `num_shared_experts_per_layer`: per-layer expert counts (routed + shared) of a
      pruned model (each layer may keep a different number of experts). When only the first is given, every layer keeps
      `min(num_shared_experts, num_experts_per_layer[L])` shared experts, as in AI2's code.
    - `emo_inference_pool_size`: when set, restrict each document's tokens to the `emo_inference_pool_size` routed
      experts with the largest summed router probability over that document (EMO's evaluation-time pool; AI2
      used 32).
      Off (`None`) by default, which is AI2's released inference: plain top-k over all kept routed experts.
      Documents are eos-delimited runs of the tokens of one forward call (see `EmoModel.forward`).
    - `emo_eos_grouping`: which document's pool routes an eos token: "ends" (the document it ends; the default)
      or "starts" (the document after it, as AI2's training router groups it). Only used with pools on.

    OLMoE fields the modelling code does not vary are still stored, so that config.json states the whole model
    and no reader falls back to its own defaults: `hidden_act` ("silu", SwiGLU experts), `attention_bias`
    (False), `attention_dropout` (0.0), `clip_qkv` (None); other values are refused. `router_aux_loss_coef` is
    the load-balancing coefficient of training (recorded; inference does not use it).
    """

    model_type = "emo"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=100352,
        hidden_size=2048,
        intermediate_size=1024,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=None,
        max_position_embeddings=4096,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        rope_theta=500000.0,
        use_cache=True,
        num_experts=128,
        num_experts_per_tok=8,
        num_shared_experts=1,
        norm_topk_prob=False,
        num_experts_per_layer=None,
        num_shared_experts_per_layer=None,
        emo_inference_pool_size=None,
        emo_eos_grouping="ends",
        pad_token_id=100277,
        bos_token_id=None,
        eos_token_id=100257,
        tie_word_embeddings=False,
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        clip_qkv=None,
        router_aux_loss_coef=0.01,
        output_router_logits=False,
        **kwargs,
    ):
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        # Set again explicitly: transformers 5.x no longer keeps these on the base class.
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.num_shared_experts = num_shared_experts
        self.norm_topk_prob = norm_topk_prob
        self.num_experts_per_layer = num_experts_per_layer
        self.num_shared_experts_per_layer = num_shared_experts_per_layer
        self.emo_inference_pool_size = emo_inference_pool_size
        self.emo_eos_grouping = emo_eos_grouping
        self.hidden_act = hidden_act
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.clip_qkv = clip_qkv
        self.router_aux_loss_coef = router_aux_loss_coef
        self.output_router_logits = output_router_logits
        self._validate_emo_fields()

    def expert_slots(self, layer_idx: int) -> tuple[int, int]:
        """(number of Hugging Face experts, routed + shared; number of shared ones among them) of layer `layer_idx`.

        Despite the name these are not Megatron's expert slots (routed + inert): a Hugging Face layer has no inert
        experts, and its shared experts are experts of their own.
        """
        if self.num_experts_per_layer is None:
            return self.num_experts, self.num_shared_experts
        n_slots = self.num_experts_per_layer[layer_idx]
        if self.num_shared_experts_per_layer is None:
            return n_slots, min(self.num_shared_experts, n_slots)
        return n_slots, self.num_shared_experts_per_layer[layer_idx]

    def _validate_emo_fields(self):
        """Fail at config time rather than with a shape error deep inside a forward pass."""
        fixed = dict(hidden_act="silu", attention_bias=False, attention_dropout=0.0, clip_qkv=None)
        for name, supported in fixed.items():
            if getattr(self, name) != supported:
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by this code (only {supported!r}).")
        if self.emo_eos_grouping not in ("ends", "starts"):
            raise ValueError(f"emo_eos_grouping={self.emo_eos_grouping!r}: expected 'ends' or 'starts'.")
        if self.tie_word_embeddings:
            raise ValueError("EMO checkpoints have separate embedding and lm_head weights (tie_word_embeddings=False).")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("hidden_size must divide into num_attention_heads, and those into num_key_value_heads.")
        for name in ("num_experts_per_layer", "num_shared_experts_per_layer"):
            per_layer = getattr(self, name)
            if per_layer is not None and len(per_layer) != self.num_hidden_layers:
                raise ValueError(f"{name} has {len(per_layer)} entries for {self.num_hidden_layers} layers.")
        for layer_idx in range(self.num_hidden_layers):
            n_slots, n_shared = self.expert_slots(layer_idx)
            n_routed_per_token = self.num_experts_per_tok - n_shared
            if not 0 <= n_shared <= n_slots or not 0 < n_routed_per_token <= n_slots - n_shared:
                raise ValueError(
                    f"layer {layer_idx}: {n_slots} slots with {n_shared} shared cannot give each token "
                    f"{self.num_experts_per_tok} experts (shared ones included)."
                )
            pool = self.emo_inference_pool_size
            if pool is not None and pool < n_routed_per_token:
                raise ValueError(f"emo_inference_pool_size {pool} < {n_routed_per_token} routed experts per token.")


__all__ = ["EmoConfig"]
