"""``emo-pretrain-megatron``: train an EMO model with Megatron-LM's own loop, ``megatron.training.pretrain``.

It is ``pretrain_gpt.py`` (Megatron-LM 0.19) with EMO routing, for teams whose runs, flags and checkpoints are
Megatron-LM's: every Megatron-LM flag works as there (TP/PP/VPP/EP/CP/SP, --use-distributed-optimizer,
--fp8-format, --save/--load, --exit-duration-in-mins, --tensorboard-dir, ...), and the ``--emo-*`` flags add
EMO's document pools (``arguments.py``). The EMO arguments are checked before any process group or GPU work
(``validation.py``); the rest is Megatron-LM's: ``pretrain`` with EMO's model config (``model.py``), datasets
(``data.py``) and forward step (``forward_step.py``).
"""

from __future__ import annotations

import argparse
import sys

from emo_plugin.cli.runner import report_input_error
from emo_plugin.errors import EmoError
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
  torchrun --nproc-per-node 8 -m emo_plugin.megatron_lm.pretrain --emo-size emo_1b14b \\
      --tensor-model-parallel-size 1 --expert-model-parallel-size 8 --sequence-parallel \\
      --use-distributed-optimizer --bf16 --fp8-format hybrid --micro-batch-size 4 --global-batch-size 1024 \\
      --train-iters 238419 --lr 4e-4 --min-lr 4e-5 --lr-decay-style cosine --lr-warmup-iters 2000 \\
      --tokenizer-model tok.model --data-path data/corpus_text_document --split 99,1,0 \\
      --save ckpt --load ckpt --save-interval 1000 --tensorboard-dir tb --exit-duration-in-mins 230
  emo-export-hf --checkpoint ckpt --out hf/            # the same exporter as for emo-pretrain checkpoints

docs/megatron_lm.md: sbatch and torchrun lines, checkpoints, what this loop has that emo-pretrain has not.
"""


def document_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron-LM's ``extra_args_provider``: the EMO flags, and a --help that says what this command is."""
    parser.prog, parser.description, parser.epilog = PROG, DESCRIPTION, EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return add_emo_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    """Parse Megatron-LM's and EMO's flags, check EMO's before any GPU work, then run Megatron-LM's ``pretrain``."""
    argv = with_size_flags(list(sys.argv[1:] if argv is None else argv))
    sys.argv = [PROG, *argv]  # Megatron-LM's parser reads sys.argv
    from megatron.core.enums import ModelType
    from megatron.training import inprocess_restart, pretrain
    from megatron.training.argument_utils import pretrain_cfg_container_from_args
    from megatron.training.arguments import parse_and_validate_args

    from emo_plugin.megatron_compat import use_prebuilt_dataset_helpers
    from emo_plugin.megatron_lm.data import train_valid_test_datasets_provider
    from emo_plugin.megatron_lm.forward_step import forward_step
    from emo_plugin.megatron_lm.validation import validate_emo_arguments

    run_pretrain, store = inprocess_restart.maybe_wrap_for_inprocess_restart(pretrain)
    try:
        args = parse_and_validate_args(extra_args_provider=document_parser,
                                       args_defaults={"tokenizer_type": "SentencePieceTokenizer"})
        run = validate_emo_arguments(args)
    except EmoError as error:
        return report_input_error(PROG, error)
    use_prebuilt_dataset_helpers()
    run_pretrain(pretrain_cfg_container_from_args(args, run.model_config), train_valid_test_datasets_provider,
                 ModelType.encoder_or_decoder, forward_step, store=store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
