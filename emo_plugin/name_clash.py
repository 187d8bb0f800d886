"""Refuse to run next to AI2's vLLM plugin, which installs a top-level module with this package's name.

AI2's EMO serving plugin for vLLM (distribution ``emo-vllm-plugin``) installs a single file ``emo_plugin.py``.
With both in one environment pip reports no conflict, since the two distributions own different files, but only
one ``emo_plugin`` can be imported: a package directory wins over a module file in the same folder, and the file
wins when it comes first on ``sys.path`` (this package installed with ``pip install -e``). Either way one of the
two fails later with a confusing ``ImportError`` or ``AttributeError``. ``import emo_plugin`` therefore checks
for the other one and stops with a message that names both and the fix; the case in which the file shadows this
package cannot be caught here (this code never runs), and docs/install.md describes it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from emo_plugin.errors import EmoError

VLLM_PLUGIN_DISTRIBUTION = "emo-vllm-plugin"
"""AI2's vLLM plugin; the metadata lookup normalizes the name, so ``emo_vllm_plugin`` is found as well."""


class NameClashError(EmoError):
    """Another distribution in this environment also provides the top-level module ``emo_plugin``."""

    kind = "install"


def vllm_plugin_distribution() -> importlib.metadata.Distribution | None:
    """AI2's vLLM plugin as installed in this environment (first on ``sys.path``), or ``None``."""
    try:
        return importlib.metadata.distribution(VLLM_PLUGIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def single_file_modules(path: Iterable[str]) -> list[Path]:
    """Every ``emo_plugin.py`` directly in a ``sys.path`` folder: what ``import emo_plugin`` would find there."""
    candidates = (Path(entry or os.curdir) / "emo_plugin.py" for entry in path)
    return [candidate for candidate in candidates if candidate.is_file()]


def check_no_name_clash(path: Iterable[str] | None = None) -> None:
    """Raise ``NameClashError`` when AI2's vLLM plugin or any other single-file ``emo_plugin`` module is installed."""
    path = list(sys.path if path is None else path)
    found = []
    distribution = vllm_plugin_distribution()
    if distribution is not None:
        found.append(
            f"distribution {distribution.metadata['Name']} {distribution.version} in {distribution.locate_file('')}"
        )
    found += [f"module file {module}" for module in single_file_modules(path)]
    if not found:
        return
    here = Path(__file__).resolve().parent
    raise NameClashError(
        f"two packages named emo_plugin are installed in this environment ({sys.prefix}): this one, emo_plugin "
        f"(EMO for Megatron-Core, at {here}), and AI2's vLLM plugin emo-vllm-plugin ({'; '.join(found)}), which "
        "installs a single file emo_plugin.py. Only one of them can be imported, and the other breaks. Train and "
        "convert in one virtual environment and serve with vLLM in another, or remove one of them here: "
        "`pip uninstall emo-vllm-plugin` (or delete the stray emo_plugin.py), or `pip uninstall emo_plugin`. "
        "See docs/install.md"
    )
