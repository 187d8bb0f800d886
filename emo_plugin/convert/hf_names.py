"""Weight names of AI2's EMO Hugging Face checkpoints (OLMoE names)."""

EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"


def layer(i: int, name: str) -> str:
    return f"model.layers.{i}.{name}"


def attn(i: int, proj: str) -> str:
    return layer(i, f"self_attn.{proj}_proj.weight")


def gate(i: int) -> str:
    return layer(i, "mlp.gate.weight")


def expert(i: int, e: int, proj: str) -> str:
    return layer(i, f"mlp.experts.{e}.{proj}_proj.weight")


PRE_ATTN_NORM = "pre_attention_layernorm.weight"
PRE_FFN_NORM = "pre_feedforward_layernorm.weight"
