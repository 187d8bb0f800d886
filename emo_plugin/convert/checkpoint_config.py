"""Find the model record of a Megatron dist checkpoint: what the writer stored, else a config file.

Sources, first match wins: ``--model-config`` (a json/yaml file with ``ModelRecord`` fields, or a training config
with ``model``/``emo`` sections), the record the trainer and the importer store in the checkpoint's common state
(``emo_plugin.model.record.RECORD_KEY``), the record ``emo-pretrain-megatron`` puts into Megatron-LM's stored
arguments (``common["args"].emo_model``, next to ``args.tokenizer_model``), or, for trainer checkpoints written
before the record existed, the run config stored there (``common["config"]``). Shapes that the tensors themselves
determine (vocabulary, layers, experts, widths) are checked against the tensors, so a wrong config fails here with
the tensor and both shapes rather than producing a broken export.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from emo_plugin.convert import megatron_keys as K
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.errors import ConversionError, shape_error
from emo_plugin.model.record import RECORD_KEY, ModelRecord
from emo_plugin.model.run_config import record_of_run_config


def _load_mapping(path: str | Path) -> dict:
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def _tokenizer_of_run(values: dict) -> str | None:
    data = values.get("data")
    return data.get("tokenizer_model") if isinstance(data, dict) else None


def _from_run_config(values: dict, reader: DistCheckpointReader, source: str) -> tuple[ModelRecord, str | None]:
    """The record of a training run config; vocabulary from the embedding, token ids from its tokenizer."""
    record = record_of_run_config(values, source)
    changes = dict(vocab_size=reader.shape(K.EMBEDDING)[0])
    tokenizer = _tokenizer_of_run(values)
    if tokenizer and Path(tokenizer).is_file():
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
        changes.update(eos_token_id=sp.eos_id(), pad_token_id=sp.pad_id())
    return dataclasses.replace(record, **changes), tokenizer


def record_of(reader: DistCheckpointReader, model_config: str | Path | None = None):
    """(ModelRecord, tokenizer model path or None) of the checkpoint, validated against its tensors."""
    common = reader.common_state()
    run = common.get("config") if isinstance(common.get("config"), dict) else None
    if model_config is not None:
        values = _load_mapping(model_config)
        if "model" in values or "emo" in values:
            record, tokenizer = _from_run_config(values, reader, str(model_config))
        else:
            record, tokenizer = ModelRecord.from_dict(values, str(model_config)), None
    elif RECORD_KEY in common:
        record = ModelRecord.from_dict(common[RECORD_KEY], f"{reader.path}: {RECORD_KEY}")
        tokenizer = None if run is None else _tokenizer_of_run(run)
    elif getattr(common.get("args"), RECORD_KEY, None) is not None:
        args = common["args"]
        record = ModelRecord.from_dict(getattr(args, RECORD_KEY), f"{reader.path}: args.{RECORD_KEY}")
        tokenizer = getattr(args, "tokenizer_model", None)
    elif run is not None:
        record, tokenizer = _from_run_config(run, reader, f"{reader.path}: the stored training config")
    else:
        raise ConversionError(
            f"{reader.path}: the checkpoint does not describe its model (no {RECORD_KEY!r}, 'args.{RECORD_KEY}' or "
            "'config' in its common state); pass --model-config with a json/yaml model record or training config"
        )
    check_shapes(reader, record)
    return record, tokenizer


def check_shapes(reader: DistCheckpointReader, record: ModelRecord) -> None:
    """Every tensor the export reads must have the global shape the record implies."""
    for key, expected in K.global_shapes(record).items():
        if not reader.has(key):
            raise ConversionError(f"{reader.path}: checkpoint has no tensor {reader.prefix + key!r}")
        actual = reader.shape(key)
        if actual != expected:
            raise shape_error(str(reader.path), reader.prefix + key, expected, actual)
