"""Find the architecture of a Megatron dist checkpoint: what the writer stored, else a config file.

Sources, first match wins: ``--model-config`` (a json/yaml file with ``EmoArchitecture`` fields, or an
emo_plugin training config), the ``emo_architecture`` entry our importer stores in the checkpoint's common
state, or the training config emo_plugin's trainer stores there (``common["config"]``). Shapes that the tensors
themselves determine (vocabulary, layers, experts, widths) are checked against the tensors, so a wrong config
fails here with the tensor and both shapes rather than producing a broken export.
"""

from __future__ import annotations

import json
from pathlib import Path

from emo_plugin.convert.architecture import EmoArchitecture
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.errors import ConversionError, shape_error
from emo_plugin.convert import megatron_keys as K


def _load_mapping(path: str | Path) -> dict:
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _from_training_config(values: dict, reader: DistCheckpointReader) -> tuple[EmoArchitecture, str | None]:
    """The architecture of an emo_plugin training run (model size + overrides), vocab from the embedding."""
    from emo_plugin.data.tokenizer import EOD_ID, PAD_ID
    from emo_plugin.training.builders import resolved_size
    from emo_plugin.training.config import TrainingConfig, apply_mapping

    cfg = TrainingConfig()
    apply_mapping(cfg, values, "training config")
    size = resolved_size(cfg)
    tokenizer = cfg.data.tokenizer_model
    eos, pad = EOD_ID, PAD_ID
    if tokenizer and Path(tokenizer).is_file():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
        eos, pad = sp.eos_id(), sp.pad_id()
    inert = cfg.emo.num_inert_experts or 0
    arch = EmoArchitecture(
        num_layers=size.num_layers,
        hidden_size=size.hidden_size,
        num_attention_heads=size.num_attention_heads,
        num_query_groups=size.num_query_groups,
        moe_ffn_hidden_size=size.moe_ffn_hidden_size,
        num_routed_experts=size.num_moe_experts - inert,
        num_inert_experts=inert,
        routed_per_token=size.moe_router_topk,
        num_shared_experts=size.num_shared_experts,
        vocab_size=reader.shape(K.EMBEDDING)[0],
        rotary_base=float(size.rotary_base),
        norm_epsilon=size.norm_epsilon,
        eos_token_id=eos,
        pad_token_id=pad,
        max_position_embeddings=size.seq_length,
    )
    return arch, tokenizer


def architecture_of(reader: DistCheckpointReader, model_config: str | Path | None = None):
    """(EmoArchitecture, tokenizer model path or None) of the checkpoint, validated against its tensors."""
    common = reader.common_state()
    if model_config is not None:
        values = _load_mapping(model_config)
        if "model" in values or "emo" in values:
            arch, tokenizer = _from_training_config(values, reader)
        else:
            arch, tokenizer = EmoArchitecture.from_dict(values), None
    elif "emo_architecture" in common:
        arch, tokenizer = EmoArchitecture.from_dict(common["emo_architecture"]), None
    elif "config" in common:
        arch, tokenizer = _from_training_config(common["config"], reader)
    else:
        raise ConversionError(
            f"{reader.path}: the checkpoint does not describe its model (no 'emo_architecture' or 'config' in "
            "common.pt); pass --model-config with a json/yaml of the architecture or training config"
        )
    check_shapes(reader, arch)
    return arch, tokenizer


def check_shapes(reader: DistCheckpointReader, arch: EmoArchitecture) -> None:
    """Every tensor the export reads must have the global shape the architecture implies."""
    for key, expected in K.global_shapes(arch).items():
        if not reader.has(key):
            raise ConversionError(f"{reader.path}: checkpoint has no tensor {reader.prefix + key!r}")
        actual = reader.shape(key)
        if actual != expected:
            raise shape_error(str(reader.path), reader.prefix + key, expected, actual)
