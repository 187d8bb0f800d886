"""A model record as Megatron-LM ``pretrain`` arguments, and back: how Megatron-LM's flags spell an EMO model.

Megatron-LM describes a model with flags (``--num-layers 16 --swiglu ...``); emo_plugin describes it with a
``ModelRecord``. The tables below pair them, read both ways: ``megatron_lm_flags`` writes a record as flags
(``emo-pretrain-megatron --emo-size NAME`` puts them in front of the user's own, which win), and
``record_from_megatron_lm_args`` reads parsed flags back into a record, refusing any setting an EMO model cannot
have (the exported Hugging Face model could not compute it).

Flag names are Megatron-LM 0.19's; the ``--emo-*`` flags are emo_plugin's (``emo_plugin/megatron_lm/arguments.py``
adds them to Megatron-LM's parser).
"""

from __future__ import annotations

import dataclasses
from argparse import Namespace
from typing import Any

from emo_plugin.errors import ConfigError
from emo_plugin.model.record import ModelRecord, fields_of_section

SHAPE_FLAGS = {
    # record field: Megatron-LM flag (the value is the field's)
    "num_layers": "--num-layers",
    "hidden_size": "--hidden-size",
    "num_attention_heads": "--num-attention-heads",
    "num_moe_experts": "--num-experts",
    "moe_router_topk": "--moe-router-topk",
    "moe_ffn_hidden_size": "--moe-ffn-hidden-size",
    "seq_length": "--seq-length",
    "rotary_base": "--rotary-base",
    "norm_epsilon": "--norm-epsilon",
}
EMO_FLAGS = {f.name: "--emo-" + f.name.replace("_", "-") for f in fields_of_section("emo")}
"""The ``emo`` section's record fields as emo_plugin's Megatron-LM flags (``--emo-pool-min`` ...)."""
REQUIRED_SETTINGS = {
    # Megatron-LM args.<dest>: (the value an EMO model needs, the flags that set it; () = Megatron-LM's default)
    "normalization": ("RMSNorm", ("--normalization", "RMSNorm")),
    "swiglu": (True, ("--swiglu",)),
    "add_bias_linear": (False, ("--disable-bias-linear",)),
    "untie_embeddings_and_output_weights": (True, ("--untie-embeddings-and-output-weights",)),
    "position_embedding_type": ("rope", ("--position-embedding-type", "rope")),
    "rotary_percent": (1.0, ()),
    "rotary_interleaved": (False, ()),
    "moe_layer_freq": (1, ()),
    "multi_latent_attention": (False, ()),
    "layernorm_zero_centered_gamma": (False, ()),
    "mtp_num_layers": (None, ()),
    "moe_router_score_function": ("softmax", ()),
}
RUN_FLAGS = ("--hidden-dropout", "0.0", "--attention-dropout", "0.0", "--moe-router-dtype", "fp32",
             "--moe-token-dispatcher-type", "alltoall")
"""Not part of the model, but what emo-pretrain trains with on GPUs: no dropout, an fp32 router, the alltoall
dispatcher."""

_DESTS = {"--norm-epsilon": "layernorm_epsilon", "--apply-layernorm-1p": "layernorm_zero_centered_gamma"}
_FLAGS_OF_DESTS = {"layernorm_zero_centered_gamma": "--apply-layernorm-1p"}


def dest(flag: str) -> str:
    """The argparse destination of a flag: ``--emo-pool-min`` → ``emo_pool_min``."""
    return _DESTS.get(flag, flag.lstrip("-").replace("-", "_"))


def flag_of(name: str) -> str:
    """The flag of an argparse destination, for messages."""
    return _FLAGS_OF_DESTS.get(name, "--" + name.replace("_", "-"))


def _flag_values(value: Any) -> list[str]:
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    return [str(value)]


def megatron_lm_flags(record: ModelRecord) -> list[str]:
    """The Megatron-LM flags that build ``record``'s model (the vocabulary comes from the tokenizer)."""
    flags = []
    for field, flag in SHAPE_FLAGS.items():
        flags += [flag, *_flag_values(getattr(record, field))]
    flags += ["--ffn-hidden-size", str(record.moe_ffn_hidden_size), "--max-position-embeddings", str(record.seq_length)]
    if record.num_query_groups != record.num_attention_heads:
        flags += ["--group-query-attention", "--num-query-groups", str(record.num_query_groups)]
    if record.qk_layernorm:
        flags.append("--qk-layernorm")
    for _, setting in REQUIRED_SETTINGS.values():
        flags += setting
    for field, flag in EMO_FLAGS.items():
        if getattr(record, field) is not None:
            flags += [flag, *_flag_values(getattr(record, field))]
    return flags + list(RUN_FLAGS)


def unsupported_settings(args: Namespace) -> list[str]:
    """Megatron-LM settings an EMO model cannot have, each as 'what is set; what to pass instead'."""
    problems = []
    for name, (needed, setting) in REQUIRED_SETTINGS.items():
        value = getattr(args, name, None)
        if value != needed:
            fix = " ".join(setting) if setting else f"{flag_of(name)} left at its default {needed!r}"
            problems.append(f"{flag_of(name)} is {value!r}: an EMO model needs {fix}")
    if args.num_experts is None:
        problems.append("--num-experts is not set: EMO routes mixture-of-experts layers")
    if args.kv_channels not in (None, args.hidden_size // args.num_attention_heads):
        problems.append(f"--kv-channels {args.kv_channels}: EMO models have head_dim = hidden / heads "
                        f"({args.hidden_size // args.num_attention_heads}); leave it unset")
    if args.max_position_embeddings is not None and args.max_position_embeddings < args.seq_length:
        problems.append(f"--max-position-embeddings {args.max_position_embeddings} is below --seq-length "
                        f"{args.seq_length}")
    return problems


def record_from_megatron_lm_args(args: Namespace, *, vocab_size: int, eos_token_id: int | None,
                                 pad_token_id: int | None) -> ModelRecord:
    """The model that parsed Megatron-LM ``args`` (with emo_plugin's ``--emo-*`` flags) describe.

    ``vocab_size`` is the padded vocabulary the run builds; the token ids are the tokenizer's. Unset ``--emo-*``
    flags take the record's defaults; pool sizes have none and must be given (or ``--emo-size``).
    """
    problems = unsupported_settings(args)
    if problems:
        raise ConfigError("Megatron-LM arguments describe a model EMO cannot train or export:\n  "
                          + "\n  ".join(problems))
    values = {field: getattr(args, dest(flag)) for field, flag in SHAPE_FLAGS.items()}
    values["num_query_groups"] = args.num_query_groups if args.group_query_attention else args.num_attention_heads
    values["qk_layernorm"] = bool(args.qk_layernorm)
    for field, flag in EMO_FLAGS.items():
        value = getattr(args, dest(flag), None)
        if value is not None:
            values[field] = tuple(value) if isinstance(value, list) else value
    missing = [EMO_FLAGS[f] for f in ("pool_min", "pool_max", "pool_eval") if f not in values]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set: give the pool sizes, or --emo-size NAME for a named "
                          "size's (emo-pretrain-megatron --help lists them)")
    values.update(vocab_size=vocab_size, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    known = {f.name for f in dataclasses.fields(ModelRecord)}
    return ModelRecord(**{k: v for k, v in values.items() if k in known})
