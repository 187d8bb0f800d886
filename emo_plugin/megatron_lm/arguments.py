"""emo-pretrain-megatron's own flags, added to Megatron-LM's parser (its ``extra_args_provider``).

The ``--emo-*`` flags are ``emo-pretrain``'s ``emo.*`` fields (``emo_plugin/run/config.py``, ``EmoSection``),
with the same help and meaning, so one run description reads the same under both trainers. Two more:
``--emo-size NAME`` writes a named size's Megatron-LM flags in front of the command line (``model/sizes.py``;
flags given later win, argparse keeps the last), and ``--emo-intra-document-attention`` packs every micro-batch
into THD sequences cut at its documents (Transformer Engine attention).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from emo_plugin.model.megatron_lm_args import EMO_FLAGS, dest, megatron_lm_flags
from emo_plugin.model.sizes import SIZES
from emo_plugin.run.config import EmoSection

SIZE_FLAG = "--emo-size"
CHOICES = {"eos_grouping": ("ends", "starts"), "lb_scope": ("micro_batch", "global_batch")}


def _scalar_type(annotation) -> type:
    """``int | None`` → int, ``tuple[int, ...] | None`` → int (per-layer pools), a ``Literal`` → str."""
    types = [t for t in typing.get_args(annotation) or (annotation,) if t is not type(None)]
    if typing.get_origin(types[0]) is tuple:
        return int
    return str if typing.get_origin(types[0]) is typing.Literal else types[0]


def add_emo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron-LM's ``extra_args_provider``: the EMO group of ``emo-pretrain-megatron --help``."""
    group = parser.add_argument_group(
        "EMO (emo_plugin)", "document-pool routing; unset fields take the model record's defaults "
        "(emo_plugin/model/record.py), except the pool sizes, which --emo-size or the flags must give")
    group.add_argument(SIZE_FLAG, choices=sorted(SIZES), help=(
        "named model size: its Megatron-LM flags (shape, RMSNorm, SwiGLU, RoPE, untied embeddings, no bias, "
        "pools) go in front of the command line; later flags override them"))
    hints = typing.get_type_hints(EmoSection)
    for field in dataclasses.fields(EmoSection):
        flag = EMO_FLAGS.get(field.name, "--emo-" + field.name.replace("_", "-"))
        is_list = any(typing.get_origin(t) is tuple for t in typing.get_args(hints[field.name]))
        group.add_argument(
            flag, dest=dest(flag), type=_scalar_type(hints[field.name]), nargs="+" if is_list else None,
            choices=CHOICES.get(field.name), default=field.default, help=field.metadata["help"])
    group.add_argument("--emo-intra-document-attention", action="store_true", help=(
        "attention stays inside each document: micro-batches are packed into THD sequences cut at the documents "
        "the router sees (needs --transformer-impl transformer_engine)"))
    return parser


def with_size_flags(argv: list[str]) -> list[str]:
    """``argv`` with the flags of ``--emo-size NAME`` in front (the flag itself stays, for the record)."""
    for position, item in enumerate(argv):
        name = None
        if item == SIZE_FLAG and position + 1 < len(argv):
            name = argv[position + 1]
        elif item.startswith(SIZE_FLAG + "="):
            name = item.split("=", 1)[1]
        if name in SIZES:  # an unknown name is left for argparse to refuse with the list of choices
            return megatron_lm_flags(SIZES[name]) + argv
    return argv
