"""Every EMO check on parsed Megatron-LM arguments, before ``pretrain`` initialises anything on a GPU.

Megatron-LM's ``validate_args`` has checked its own flags; what is left is EMO's: the model the flags describe
(``model/megatron_lm_args.py``, then the record rules every front end shares, ``model/record_checks.py``), the
tokenizer and datasets (emo_plugin's sentencepiece models and their sidecars), the load-balancing flags (EMO
owns load balancing), and the Megatron settings EMO refuses (``EmoTransformerConfig``, ``moe/config.py``). The
result is the run's model record and the model config ``pretrain`` builds from; the record also goes into
``args.emo_model``, so every checkpoint Megatron-LM writes carries it with its stored args.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from megatron.core.extensions.transformer_engine import HAVE_TE
from megatron.core.models.gpt.gpt_layer_specs import HAVE_APEX
from megatron.training.models.gpt import GPTModelConfig

from emo_plugin.data.dataset import check_prefix
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import ConfigError, DataError
from emo_plugin.megatron_lm.model import emo_model_config
from emo_plugin.model.megatron_lm_args import EMO_FLAGS, SHAPE_FLAGS, record_from_megatron_lm_args
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.record_checks import record_problems

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")
UNSUPPORTED_DATA = {"mock_data": "--mock-data", "sft": "--sft", "fim_data": "--fim-data"}


@dataclass(frozen=True)
class EmoRun:
    record: ModelRecord
    model_config: GPTModelConfig


def flag_of_field(name: str) -> str:
    """The flag that sets a model record field, for messages."""
    return {**SHAPE_FLAGS, **EMO_FLAGS}.get(name, f"--{name.replace('_', '-')}")


def check_tokenizer_type(args: Namespace) -> None:
    """emo_plugin's data is sentencepiece; ``None`` becomes Megatron-LM's default, SentencePieceTokenizer."""
    if args.tokenizer_type not in (None, *SENTENCEPIECE_TYPES):
        raise ConfigError(f"--tokenizer-type {args.tokenizer_type}: expected one of {', '.join(SENTENCEPIECE_TYPES)} "
                          "with --tokenizer-model (an emo_plugin sentencepiece model, emo-train-tokenizer)")


def _check_tokenizer(args: Namespace) -> EmoTokenizer:
    check_tokenizer_type(args)
    if not args.tokenizer_model or not Path(args.tokenizer_model).is_file():
        raise ConfigError(f"--tokenizer-model {args.tokenizer_model}: expected an existing sentencepiece .model file")
    try:
        tokenizer = EmoTokenizer(args.tokenizer_model)
    except DataError as error:
        raise ConfigError(f"--tokenizer-model {args.tokenizer_model}: {error}") from None
    from megatron.training import get_tokenizer

    megatron = get_tokenizer()
    if (megatron.vocab_size, megatron.eod) != (tokenizer.vocab_size, tokenizer.eod):
        raise ConfigError(
            f"--tokenizer-type {args.tokenizer_type}: Megatron-LM reads {args.tokenizer_model} as vocabulary "
            f"{megatron.vocab_size} with EOD {megatron.eod}, emo_plugin's data as {tokenizer.vocab_size} with EOD "
            f"{tokenizer.eod}; use --tokenizer-type SentencePieceTokenizer")
    return tokenizer


def _check_data(args: Namespace, tokenizer: EmoTokenizer) -> None:
    for name, flag in UNSUPPORTED_DATA.items():
        if getattr(args, name, False):
            raise ConfigError(f"{flag}: EMO trains on emo_plugin's indexed datasets, whose samples carry document "
                              "ids (make them with emo-preprocess-data and pass --data-path)")
    from megatron.training.utils import get_blend_and_blend_per_split

    blend, blend_per_split = get_blend_and_blend_per_split(args)
    prefixes = list(blend[0]) if blend else [p for b in blend_per_split or () if b for p in b[0]]
    if not prefixes:
        raise ConfigError("--data-path (or --train-data-path ...): expected emo_plugin indexed dataset prefixes")
    for prefix in prefixes:
        missing = [s for s in (".bin", ".idx") if not Path(f"{prefix}{s}").is_file()]
        if missing:
            raise ConfigError(f"--data-path {prefix}: {prefix}{missing[0]} does not exist; make it with "
                              "emo-preprocess-data")
        check_prefix(prefix, tokenizer)  # the sidecar names this tokenizer; the files are the ones it describes


def _check_load_balancing(args: Namespace, record: ModelRecord) -> None:
    """EMO owns load balancing and the z-loss; Megatron-LM's flags for them must stay at their defaults."""
    aux = args.moe_aux_loss_coeff
    if (any(aux) if isinstance(aux, list) else aux) or args.moe_router_load_balancing_type not in ("aux_loss", "none"):
        raise ConfigError(f"--moe-router-load-balancing-type {args.moe_router_load_balancing_type} with "
                          f"--moe-aux-loss-coeff {aux}: EMO owns load balancing; set --emo-lb-coeff instead")
    if args.moe_z_loss_coeff not in (None, record.z_loss_coeff or None):
        raise ConfigError(f"--moe-z-loss-coeff {args.moe_z_loss_coeff}: set --emo-z-loss-coeff instead (EMO applies "
                          "the z-loss to the pool-masked logits)")
    # Megatron-LM's log names the MoE losses after these flags: EMO's global load-balancing loss is recorded as
    # load_balancing_loss ("aux_loss"), its z-loss as z_loss.
    args.moe_router_load_balancing_type = "aux_loss"
    args.moe_z_loss_coeff = record.z_loss_coeff or None


def _check_layers(args: Namespace) -> None:
    if args.transformer_impl == "transformer_engine" and not HAVE_TE:
        raise ConfigError("--transformer-impl transformer_engine: Transformer Engine is not importable here "
                          "(megatron.core.extensions.transformer_engine.HAVE_TE is False); install it or pass "
                          "--transformer-impl local")
    if args.transformer_impl == "local" and not HAVE_APEX and not args.no_persist_layer_norm:
        raise ConfigError("--transformer-impl local without apex: torch norms cannot be persistent; pass "
                          "--no-persist-layer-norm")
    if args.emo_intra_document_attention and args.transformer_impl != "transformer_engine":
        raise ConfigError("--emo-intra-document-attention: thd packed sequences run only in Transformer Engine's "
                          "attention; expected --transformer-impl transformer_engine")


def validate_emo_arguments(args: Namespace) -> EmoRun:
    """The run's record and model config; ``ConfigError`` naming the flag for anything EMO cannot train."""
    tokenizer = _check_tokenizer(args)
    record = record_from_megatron_lm_args(args, vocab_size=args.padded_vocab_size, eos_token_id=tokenizer.eod,
                                          pad_token_id=tokenizer.pad)
    problems = record_problems(record, key=flag_of_field)
    if problems:
        name, value, expected = problems[0]
        raise ConfigError(f"{flag_of_field(name)} {value}: expected {expected}")
    _check_layers(args)
    _check_load_balancing(args, record)
    _check_data(args, tokenizer)
    try:
        model_config = emo_model_config(args, record)
    except ConfigError as error:  # EmoTransformerConfig names its fields (emo.pool_min): say which flag sets them
        raise ConfigError(f"{error} (emo.<field> is set by --emo-<field>)") from None
    except (ValueError, AssertionError) as error:  # Megatron's own TransformerConfig checks
        raise ConfigError(f"Megatron rejected the transformer config of these flags: {error}") from None
    args.emo_model = record.to_dict()
    return EmoRun(record=record, model_config=model_config)
