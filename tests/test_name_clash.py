"""``import emo_plugin`` stops with NameClashError when AI2's vLLM plugin (a single-file module ``emo_plugin``) is
installed beside it. Each case imports the package in a fresh interpreter whose ``sys.path`` has the repository
(also the working directory) first, then a temporary folder with a fake installation: dist-info metadata, or the
module file itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_emo_plugin(site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    code = "import emo_plugin; print('imported', emo_plugin.__file__)"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def fake_distribution(site: Path, folder: str, name: str) -> None:
    (site / folder).mkdir(parents=True)
    (site / folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.1\n")
    (site / folder / "RECORD").write_text("emo_plugin.py,,\n")


@pytest.mark.parametrize(
    "folder, name",
    [("emo_vllm_plugin-0.3.1.dist-info", "emo-vllm-plugin"), ("emo_vllm_plugin-0.3.1.dist-info", "emo_vllm_plugin")],
)
def test_the_vllm_plugin_distribution_is_refused(tmp_path: Path, folder: str, name: str) -> None:
    fake_distribution(tmp_path, folder, name)
    result = import_emo_plugin(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "NameClashError" in result.stderr
    assert f"distribution {name} 0.3.1" in result.stderr
    assert "EMO for Megatron-Core" in result.stderr and "AI2's vLLM plugin emo-vllm-plugin" in result.stderr
    assert "pip uninstall emo-vllm-plugin" in result.stderr and "virtual environment" in result.stderr


def test_a_single_file_emo_plugin_module_is_refused(tmp_path: Path) -> None:
    """The plugin's module without its metadata (copied in, or left behind by a broken uninstall)."""
    (tmp_path / "emo_plugin.py").write_text("def register():\n    pass\n")
    result = import_emo_plugin(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "NameClashError" in result.stderr
    assert f"module file {tmp_path / 'emo_plugin.py'}" in result.stderr


def test_other_distributions_are_not_a_clash(tmp_path: Path) -> None:
    fake_distribution(tmp_path, "emo_tools-0.3.1.dist-info", "emo-tools")
    (tmp_path / "emo_plugin_extras.py").write_text("")
    result = import_emo_plugin(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"imported {ROOT / 'emo_plugin' / '__init__.py'}" in result.stdout


def test_the_error_is_an_input_error_of_the_package() -> None:
    """The CLI runner prints EmoErrors as one line with exit code 2, not as a traceback."""
    from emo_plugin.errors import EmoError
    from emo_plugin.name_clash import NameClashError

    assert issubclass(NameClashError, EmoError) and NameClashError.kind == "install"
