"""Where ``emo-pretrain --config`` reads from: a shipped config by name, or a YAML file by path.

The shipped configs live in ``emo_plugin/configs`` as package data, so an installed wheel finds them without a
checkout: ``--config tiny_cpu`` (or ``tiny_cpu.yaml``) names one; any other value is a path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from emo_plugin.errors import ConfigError

DEFAULT_CONFIG = "tiny_cpu"


def shipped_configs() -> list[str]:
    """Names of the configs inside the package, without ``.yaml``."""
    return sorted(entry.name.removesuffix(".yaml") for entry in resources.files("emo_plugin").joinpath("configs")
                  .iterdir() if entry.name.endswith(".yaml"))


def read_config_file(name_or_path: str) -> dict:
    """The YAML mapping of ``--config``; a missing, unreadable or malformed file is a ``ConfigError``."""
    shipped = resources.files("emo_plugin").joinpath("configs", name_or_path.removesuffix(".yaml") + ".yaml")
    source = Path(name_or_path) if Path(name_or_path).exists() or not shipped.is_file() else shipped
    try:
        return yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {name_or_path}: file not found, and no shipped config has that name "
                          f"(shipped: {', '.join(shipped_configs())})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {name_or_path}: cannot read the file ({error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" line {where.line + 1}, column {where.column + 1}" if where else ""
        reason = getattr(error, "problem", None) or error
        raise ConfigError(f"--config {name_or_path}:{at}: malformed YAML ({reason})") from None
