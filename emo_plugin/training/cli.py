"""``emo-pretrain``: command line → ``TrainingConfig`` → ``Trainer``.

Precedence: dataclass defaults < ``--config`` YAML < ``--section.field=value`` < Megatron-style flags given
later on the line (argparse keeps the last). With no arguments at all, the embedded default
``examples/configs/tiny_cpu.yaml`` runs (tiny EMO model on the bundled corpus, CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from emo_plugin.training.config import SECTIONS, ConfigError, TrainingConfig, apply_mapping, field_types, set_value
from emo_plugin.training.exit_codes import EPILOG as EXIT_CODES_HELP

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "configs" / "tiny_cpu.yaml"

DESCRIPTION = """\
Pretrain a Megatron-Core GPT mixture-of-experts model with EMO document-pool routing.

CPU (gloo, the embedded default): the EMO model runs with host execution and a plain PyTorch step.
GPU (NCCL): Megatron-Core's DDP, distributed optimizer, pipeline schedules and Transformer Engine.
Launch with python (1 process), torchrun, or srun (ranks from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID).
"""

EPILOG = """\
examples:
  emo-pretrain                                          # tiny EMO model on the bundled corpus, CPU
  torchrun --nproc-per-node 2 -m emo_plugin.training.cli --config examples/configs/tiny_cpu.yaml
  emo-pretrain --config examples/configs/emo_1b14b.yaml --expert-model-parallel-size 8 --save ckpt/
  emo-pretrain --config examples/configs/tiny_cpu.yaml --schedule.train_iters=20 --emo.pool_eval=8

Checkpoints: <save>/iter_XXXXXXX (Megatron torch_dist, reshardable) and latest_checkpointed_iteration.txt.
On start the newest checkpoint in --save wins (resume after preemption or requeue); otherwise --load is the
initial state (--finetune: model weights only); a --load without a checkpoint is an error unless
--checkpoint.allow_missing_load=true. The log says which checkpoint was loaded and why.
SIGTERM or SIGUSR1 (alike), or --exit-duration-in-mins: save after the current step and exit 75.

""" + EXIT_CODES_HELP


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emo-pretrain",
        usage="emo-pretrain [--config YAML] [--section.field=VALUE ...] [Megatron-style flags, e.g. --lr 1e-3]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="YAML", help="training config file (default with no arguments: examples/configs/tiny_cpu.yaml)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config (fields, files, memory estimate) and exit without training")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the memory/communication/FLOPs plan of this config per rank and exit (no GPU, no "
                        "data needed; world size: --plan.world_size); exit 0 if it fits, 1 if not")
    cfg = TrainingConfig()
    top = parser.add_argument_group("run")
    for section, section_cls in [(None, TrainingConfig), *SECTIONS.items()]:
        group = top if section is None else parser.add_argument_group(section, (section_cls.__doc__ or "").strip() or None)
        types = field_types(section_cls)
        for f in dataclasses.fields(section_cls):
            is_bool = types[f.name] is bool
            if section is None and f.name in SECTIONS:
                continue
            key = f.name if section is None else f"{section}.{f.name}"
            default = getattr(cfg, f.name) if section is None else getattr(getattr(cfg, section), f.name)
            names = [f"--{key}"] + ([f.metadata["megatron"]] if f.metadata.get("megatron") and not is_bool and f.metadata["megatron"] != f"--{key}" else [])
            group.add_argument(*names, dest=key, metavar="V", help=f"{f.metadata.get('help', '')} (default: {default})")
            if f.metadata.get("megatron") and is_bool:
                group.add_argument(f.metadata["megatron"], dest=key, action="store_const", const="true", help=f"same as --{key}=true")
    top.add_argument("--bf16", dest="precision.dtype", action="store_const", const="bf16", help="same as --precision.dtype=bf16")
    return parser


def read_config_file(path: str) -> dict:
    """The YAML mapping of ``--config``; a missing, unreadable or malformed file is a ``ConfigError``."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found (examples: {DEFAULT_CONFIG.parent})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path}: cannot read the file ({error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" line {where.line + 1}, column {where.column + 1}" if where else ""
        reason = getattr(error, "problem", None) or error
        raise ConfigError(f"--config {path}:{at}: malformed YAML ({reason})") from None


def parse_config(argv: list[str]) -> TrainingConfig:
    namespace, unknown = build_parser().parse_known_args(argv)
    args = vars(namespace)
    cfg = TrainingConfig()
    config_path = args.pop("config", None)
    if config_path is None and not argv:
        config_path = str(DEFAULT_CONFIG)
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
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv)
        if "--print-config" in argv:
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            return 0
        if "--dry-run" in argv:
            from emo_plugin.planning.dry_run import dry_run

            return dry_run(cfg)
        from emo_plugin.training.validation import validate

        validate(cfg)
        if "--check-config" in argv:
            print("emo-pretrain: config OK", file=sys.stderr)
            return 0
    except ConfigError as error:
        print(f"emo-pretrain: config error: {error}", file=sys.stderr)
        return 2
    from emo_plugin.data.errors import DataError
    from emo_plugin.checkpoint import CheckpointError
    from emo_plugin.training.trainer import NonFiniteLossError, run

    try:
        return run(cfg)
    except ConfigError as error:
        print(f"emo-pretrain: config error: {error}", file=sys.stderr)
        return 2
    except DataError as error:
        print(f"emo-pretrain: data error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"emo-pretrain: stopped: {error}", file=sys.stderr)
        return 3
    except CheckpointError as error:
        print(f"emo-pretrain: checkpoint error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
