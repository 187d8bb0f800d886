"""Build a Megatron ``GPTModel`` whose MoE layers route with EMO."""

from __future__ import annotations

from megatron.core.models.gpt.gpt_model import GPTModel

from emo_plugin.megatron_compat import replace_rotary_embedding
from emo_plugin.model.host_modules import HostRotaryEmbedding
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.spec import emo_decoder_block_spec
from emo_plugin.moe.config import EmoTransformerConfig


def build_emo_gpt_model(
    config: EmoTransformerConfig,
    *,
    vocab_size: int,
    max_sequence_length: int,
    use_transformer_engine: bool,
    host_execution: bool = False,
    rotary_base: int = ModelRecord.rotary_base,  # the record field's default, written only there
    pre_process: bool = True,
    post_process: bool = True,
    vp_stage: int | None = None,
    pg_collection=None,
) -> GPTModel:
    """GPTModel with RoPE and untied embeddings (EMO's released architecture) and EMO MoE layers.

    ``host_execution`` builds the CPU variant (local spec, ``HostDotProductAttention``, host RoPE) used by
    the embedded default and CI; GPU runs leave it off and get Megatron's modules unchanged. ``rotary_base``
    (RoPE θ) defaults to ``ModelRecord.rotary_base``'s default; callers with a record pass the record's value.
    """
    spec = emo_decoder_block_spec(
        config,
        use_transformer_engine=use_transformer_engine,
        host_attention=host_execution,
        vp_stage=vp_stage,
    )
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=rotary_base,
        vp_stage=vp_stage,
        pg_collection=pg_collection,
    )
    if host_execution:
        replace_rotary_embedding(model, HostRotaryEmbedding.like(model.rotary_pos_emb, config))
    return model
