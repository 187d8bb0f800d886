"""``emo-pretrain-megatron``: train an EMO model with Megatron-LM's own loop, ``megatron.training.pretrain``.

It is ``pretrain_gpt.py`` (Megatron-LM 0.19) with EMO routing, for teams whose runs, flags and checkpoints are
Megatron-LM's: every Megatron-LM flag works as there (TP/PP/VPP/EP/CP/SP, --use-distributed-optimizer,
--fp8-format, --save/--load, --exit-duration-in-mins, --tensorboard-dir, ...), and the ``--emo-*`` flags add
EMO's document pools (``arguments.py``). The EMO arguments are checked before any process group or GPU work
(``validation.py``); the rest is Megatron-LM's: ``pretrain`` with EMO's model config (``model.py``), datasets
(``data.py``) and forward step (``forward_step.py``). It exits like emo-pretrain: 0 finished, 75 stopped early
with a checkpoint to resume from (requeue), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from emo_plugin.cli.runner import report_input_error
from emo_plugin.errors import ConfigError, EmoError
from emo_plugin.megatron_lm.arguments import add_emo_arguments, with_size_flags

PROG = "emo-pretrain-megatron"
DESCRIPTION = """\
Train an EMO mixture-of-experts model with Megatron-LM's training loop (megatron.training.pretrain).

All of Megatron-LM's flags (pretrain_gpt.py's) apply; the EMO group below adds document-pool routing.
--emo-size NAME writes a named size's model flags in front of yours (yours win). The model must be what an EMO
checkpoint can hold: RMSNorm, SwiGLU, RoPE, untied embeddings, no bias, every layer a mixture of experts; the
data emo_plugin's indexed datasets (emo-preprocess-data) with their sentencepiece tokenizer.
"""
EPILOG = """\
examples:
  torchrun --nproc-per-node 8 -m emo_plugin.cli.pretrain_megatron --emo-size emo_1b14b \\
      --tensor-model-parallel-size 1 --expert-model-parallel-size 8 --sequence-parallel \\
      --use-distributed-optimizer --bf16 --fp8-format hybrid --micro-batch-size 4 --global-batch-size 1024 \\
      --train-iters 238419 --lr 4e-4 --min-lr 4e-5 --lr-decay-style cosine --lr-warmup-iters 2000 \\
      --tokenizer-model tok.model --data-path data/corpus_text_document --split 99,1,0 \\
      --save ckpt --load ckpt --save-interval 1000 --tensorboard-dir tb --exit-duration-in-mins 230
  emo-export-hf --checkpoint ckpt --output hf/         # the same exporter as for emo-pretrain checkpoints

docs/megatron_lm.md: sbatch and torchrun lines, checkpoints, what this loop has that emo-pretrain has not.
"""


def document_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron-LM's ``extra_args_provider``: the EMO flags, and a --help that says what this command is."""
    parser.prog, parser.description, parser.epilog = PROG, DESCRIPTION, EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:  # Megatron-LM 0.19's own help for --moe-paged-stash-* holds a bare "10%)"
        action.help = _escape_bare_percent(action.help)
    return add_emo_arguments(parser)


def _escape_bare_percent(help_text):
    """argparse %-formats every help; a bare ``%`` (not ``%%`` or ``%(name)s``) makes --help raise ValueError."""
    if not isinstance(help_text, str):
        return help_text
    return re.sub(r"%%|%\(|%", lambda match: "%%" if match.group() == "%" else match.group(), help_text)


def parse_emo_run(argv: list[str]):
    """(Megatron-LM's args, the checked EMO run) of a command line; ``ConfigError`` for anything EMO refuses.

    Megatron-LM keeps the args (and tokenizer, TensorBoard writer, ...) as process globals, as ``pretrain`` expects.
    Its ``validate_args`` refuses with bare assertions; they come back as ``ConfigError`` with the failed check.
    """
    from megatron.training.arguments import parse_and_validate_args, parse_args

    from emo_plugin.megatron_lm.validation import check_tokenizer_type, validate_emo_arguments

    command_line, sys.argv = sys.argv, [PROG, *with_size_flags(argv)]  # Megatron-LM's parser reads sys.argv
    try:
        check_tokenizer_type(parse_args(extra_args_provider=document_parser))  # before Megatron-LM builds it
        args = parse_and_validate_args(extra_args_provider=document_parser,
                                       args_defaults={"tokenizer_type": "SentencePieceTokenizer"})
    except AssertionError as error:
        raise ConfigError(f"Megatron-LM refused the arguments: {_failed_check(error)}") from None
    finally:
        sys.argv = command_line
    return args, validate_emo_arguments(args)


def _failed_check(error: AssertionError) -> str:
    """The assertion's message, or the check itself (file:line and its source) when it has none."""
    if str(error):
        return str(error)
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{frame.line} ({Path(frame.filename).name}:{frame.lineno})"


def main(argv: list[str] | None = None) -> int:
    """Parse Megatron-LM's and EMO's flags, check EMO's before any GPU work, then run Megatron-LM's ``pretrain``."""
    from megatron.core.enums import ModelType
    from megatron.training import inprocess_restart, pretrain
    from megatron.training.argument_utils import pretrain_cfg_container_from_args

    from emo_plugin.megatron_compat import use_prebuilt_dataset_helpers
    from emo_plugin.megatron_lm.data import train_valid_test_datasets_provider
    from emo_plugin.megatron_lm.forward_step import forward_step

    argv = list(sys.argv[1:] if argv is None else argv)
    sys.argv = [PROG, *with_size_flags(argv)]  # for Megatron-LM's own later parses (in-process restart)
    try:
        args, run = parse_emo_run(argv)
    except EmoError as error:
        return report_input_error(PROG, error)
    run_pretrain, store = inprocess_restart.maybe_wrap_for_inprocess_restart(pretrain)
    use_prebuilt_dataset_helpers()
    return exit_status(lambda: run_pretrain(pretrain_cfg_container_from_args(args, run.model_config),
                                            train_valid_test_datasets_provider, ModelType.encoder_or_decoder,
                                            forward_step, store=store), args.save, args.train_iters)


def exit_status(train: Callable[[], object], save: str | None, train_iters: int | None) -> int:
    """Run ``train`` (Megatron-LM's ``pretrain``) and return emo-pretrain's exit code for how it ended.

    Megatron-LM ends an early stop (signal, --exit-duration-in-mins, --exit-interval) with ``sys.exit(0)``, and a
    failure it has printed (unreadable checkpoint, missing RNG state, ...) with a bare ``sys.exit()``: that one
    becomes status 1, or a requeue would retry it forever. The rerun state machine's own codes pass through.
    """
    try:
        train()
    except SystemExit as stop:
        if stop.code != 0:
            raise SystemExit(1 if stop.code is None else stop.code) from None
    return exit_code(save, train_iters)


def exit_code(save: str | None, train_iters: int | None) -> int:
    """emo-pretrain's exit contract (``run/exit_codes.py``) for Megatron-LM's loop, which ends with status 0
    both at the end and when it stops early (--exit-signal-handler, --exit-duration-in-mins, --exit-interval) after
    saving: 75 (requeue) while the newest checkpoint in --save is short of --train-iters, else 0."""
    from emo_plugin.checkpoint import latest_iteration
    from emo_plugin.run.exit_codes import FINISHED, RESUMABLE

    saved = latest_iteration(save) if save else None
    return RESUMABLE if train_iters and saved is not None and saved < train_iters else FINISHED


if __name__ == "__main__":
    sys.exit(main())
