"""A console script imports no other console script: what two commands share lives in emo_plugin's library
packages (e.g. emo_plugin/evaluation) or in the modules of emo_plugin/cli that exist to be shared (the runner and
the option sets)."""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "emo_plugin" / "cli"
SHARED = {"runner", "model_on_corpus", "task_prompt_options"}  # the console-script pattern and shared option sets


def cli_imports(path: Path) -> set[str]:
    """The emo_plugin.cli modules that ``path`` imports (``from emo_plugin.cli import x`` counts as x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "emo_plugin.cli":
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[2] for name in names if name.startswith("emo_plugin.cli.")}
    return found


def test_console_scripts_import_only_the_shared_cli_modules():
    assert SHARED <= {p.stem for p in CLI.glob("*.py")}
    imports = {p.stem: cli_imports(p) - SHARED for p in sorted(CLI.glob("*.py"))}
    assert {name: found for name, found in imports.items() if found} == {}


def test_the_shared_modules_are_no_commands():
    for name in SHARED:
        assert "\ndef main(" not in (CLI / f"{name}.py").read_text(), name
