"""``emo-pretrain``: command line → ``TrainingConfig`` → ``Trainer``.

Precedence: dataclass defaults < ``--config`` YAML < ``--section.field=value`` < Megatron-style flags given
later on the line (argparse keeps the last). With no arguments at all, the shipped default ``tiny_cpu``
(``emo_plugin/configs/tiny_cpu.yaml``: tiny EMO model on the bundled corpus, CPU) runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from emo_plugin.cli.runner import report_input_error
from emo_plugin.errors import ConfigError, EmoError
from emo_plugin.run.config import SECTIONS, TrainingConfig, apply_mapping, field_types, set_value
from emo_plugin.run.config_file import DEFAULT_CONFIG, read_config_file, shipped_configs
from emo_plugin.run.exit_codes import EPILOG as EXIT_CODES_HELP
from emo_plugin.run.exit_codes import ERROR, NON_FINITE

DESCRIPTION = """\
Pretrain a Megatron-Core GPT mixture-of-experts model with EMO document-pool routing.

CPU (gloo, the embedded default): the EMO model runs with host execution and a plain PyTorch step.
GPU (NCCL): Megatron-Core's DDP, distributed optimizer, pipeline schedules and Transformer Engine.
Launch with python (1 process), torchrun, or srun (ranks from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID).
"""

EPILOG = """\
examples:
  emo-pretrain                                          # tiny EMO model on the bundled corpus, CPU
  torchrun --nproc-per-node 2 -m emo_plugin.cli.pretrain --config tiny_cpu
  emo-pretrain --config emo_1b14b --expert-model-parallel-size 8 --save ckpt/
  emo-pretrain --config tiny_cpu --schedule.train_iters=20 --emo.pool_eval=8
  emo-pretrain --config my_run.yaml                     # a config file of your own

Shipped configs (--config NAME, in emo_plugin/configs): {shipped}.

Checkpoints: <save>/iter_XXXXXXX (Megatron torch_dist, reshardable) and latest_checkpointed_iteration.txt.
On start the newest checkpoint in --save wins (resume after preemption or requeue); otherwise --load is the
initial state (--finetune: model weights only); a --load without a checkpoint is an error unless
--checkpoint.allow_missing_load=true. The log says which checkpoint was loaded and why.
SIGTERM or SIGUSR1 (alike), or --exit-duration-in-mins: save after the current step and exit 75.

""" + EXIT_CODES_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emo-pretrain",
        usage="emo-pretrain [--config NAME|YAML] [--section.field=VALUE ...] [Megatron-style flags, e.g. --lr 1e-3]",
        description=DESCRIPTION,
        epilog=EPILOG.format(shipped=", ".join(shipped_configs())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="NAME|YAML", help="a shipped config's name or a YAML file "
                        f"(default with no arguments: {DEFAULT_CONFIG})")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config (fields, files, memory estimate) and exit without training; world "
                        "size: --plan.world_size, the launcher's, else the smallest the layout runs on")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the memory/communication/FLOPs plan of this config per rank and exit (no GPU, no "
                        "data needed; world size: --plan.world_size); exit 0 if it fits, 1 if not")
    cfg = TrainingConfig()
    top = parser.add_argument_group("run")
    for section, section_cls in [(None, TrainingConfig), *SECTIONS.items()]:
        group = top if section is None else parser.add_argument_group(
            section, (section_cls.__doc__ or "").strip() or None)
        types = field_types(section_cls)
        for f in dataclasses.fields(section_cls):
            is_bool = types[f.name] is bool
            if section is None and f.name in SECTIONS:
                continue
            key = f.name if section is None else f"{section}.{f.name}"
            default = getattr(cfg, f.name) if section is None else getattr(getattr(cfg, section), f.name)
            megatron = f.metadata.get("megatron")
            names = [f"--{key}"] + ([megatron] if megatron and not is_bool and megatron != f"--{key}" else [])
            shown = f.metadata.get("default_text") if default is None else None
            group.add_argument(*names, dest=key, metavar="V",
                               help=f"{f.metadata.get('help', '')} (default: {shown or default})")
            if f.metadata.get("megatron") and is_bool:
                group.add_argument(f.metadata["megatron"], dest=key, action="store_const", const="true",
                                   help=f"same as --{key}=true")
    top.add_argument("--bf16", dest="precision.dtype", action="store_const", const="bf16",
                     help="same as --precision.dtype=bf16")
    return parser


def parse_config(argv: list[str]) -> TrainingConfig:
    namespace, unknown = build_parser().parse_known_args(argv)
    args = vars(namespace)
    cfg = TrainingConfig()
    config_path = args.pop("config", None)
    if config_path is None and not argv:
        config_path = DEFAULT_CONFIG
    if config_path:
        apply_mapping(cfg, read_config_file(config_path), config_path)
    args.pop("print_config", None)
    args.pop("check_config", None)
    args.pop("dry_run", None)
    for key, value in args.items():
        set_value(cfg, key, value)
    for item in unknown:  # unknown '--section.field=value': set_value names what is wrong
        if not (item.startswith("--") and "=" in item):
            raise ConfigError(f"{item}: unknown argument (see emo-pretrain --help)")
        set_value(cfg, *item[2:].split("=", 1))
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Parse, validate once, train; bad input is one line and exit 2 (exit codes: ``exit_codes.py``)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _start(argv)
    except EmoError as error:
        return report_input_error("emo-pretrain", error)


def _start(argv: list[str]) -> int:
    cfg = parse_config(argv)
    if "--print-config" in argv:
        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        return 0
    if "--dry-run" in argv:
        from emo_plugin.planning.dry_run import dry_run

        return dry_run(cfg)
    if "--check-config" in argv:
        from emo_plugin.planning.fit_check import check_config

        check_config(cfg)
        print("emo-pretrain: config OK", file=sys.stderr)
        return 0
    from emo_plugin.checkpoint import CheckpointError
    from emo_plugin.training.trainer import NonFiniteLossError, run

    try:
        return run(cfg)  # validates the config before any process group, model or GPU work
    except NonFiniteLossError as error:
        print(f"emo-pretrain: stopped: {error}", file=sys.stderr)
        return NON_FINITE
    except CheckpointError as error:
        print(f"emo-pretrain: checkpoint error: {error}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
