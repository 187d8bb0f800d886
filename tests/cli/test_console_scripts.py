"""Every console script in setup.cfg is an importable ``main`` whose ``--help`` works, as is every tools/ wrapper;
input errors are one line and exit 2; ``--config`` finds shipped configs by name and files by path."""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import ConfigError, DataError, EmoError
from emo_plugin.run.config_file import read_config_file, shipped_configs

REPO = Path(__file__).resolve().parents[2]


def console_scripts() -> dict[str, str]:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


SCRIPTS = console_scripts()
WRAPPERS = sorted(p.name for p in (REPO / "tools").glob("*.py") if not p.name.startswith("gpu_check"))


def test_every_tool_in_the_package_is_a_console_script():
    """Every module of emo_plugin/cli with a ``main`` is a command (the others hold options commands share)."""
    modules = {p.stem for p in (REPO / "emo_plugin" / "cli").glob("*.py") if "\ndef main(" in p.read_text()}
    assert "reinsert_experts" in modules and SCRIPTS["emo-reinsert-experts"] == "emo_plugin.cli.reinsert_experts:main"
    assert {target.split(":")[0].rsplit(".", 1)[1] for target in SCRIPTS.values()} >= modules
    assert {f"emo-{m.replace('_', '-')}" for m in modules} <= set(SCRIPTS)


def test_the_selection_commands_are_registered():
    expected = {"select_experts", "prune_experts", "evaluate_subsets", "exclude_experts"}
    assert {f"emo-{name.replace('_', '-')}" for name in expected} <= set(SCRIPTS)
    assert {f"{name}.py" for name in expected} <= set(WRAPPERS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_resolves_and_documents_itself(script, capsys):
    module, function = SCRIPTS[script].split(":")
    main = getattr(importlib.import_module(module), function)
    assert callable(main)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"usage: {script}")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_tools_wrapper_runs_the_console_script(wrapper):
    text = (REPO / "tools" / wrapper).read_text()
    assert "sys.path" not in text
    proc = subprocess.run([sys.executable, str(REPO / "tools" / wrapper), "--help"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: emo-{wrapper[:-3].replace('_', '-')}"), proc.stderr


def test_runner_reports_input_errors_on_one_line_and_keeps_bugs(capsys):
    parser = documented_parser("Summary line.\n\nexample:\n  emo-x", "emo-x")

    def refuse(args):
        raise DataError("corpus.jsonl:3: field 'text' must be a string")

    assert run_command(parser, refuse, []) == 2
    assert capsys.readouterr().err == "emo-x: data error: corpus.jsonl:3: field 'text' must be a string\n"
    assert run_command(parser, lambda args: None, []) == 0

    def crash(args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_command(parser, crash, [])


def test_errors_share_one_base_that_is_a_value_error():
    from emo_plugin.errors import AnalysisError, ConversionError

    for error in (ConfigError, DataError, ConversionError, AnalysisError):
        assert issubclass(error, EmoError) and issubclass(error, ValueError)


def test_config_is_a_shipped_name_or_a_path(tmp_path):
    assert {"tiny_cpu", "small_gpu", "emo_1b14b"} <= set(shipped_configs())
    shipped = read_config_file("tiny_cpu")
    assert read_config_file("tiny_cpu.yaml") == shipped and shipped["model"]["size"] == "tiny"
    own = tmp_path / "tiny_cpu.yaml"
    own.write_text("model:\n  size: small\n")
    assert read_config_file(str(own)) == {"model": {"size": "small"}}
    with pytest.raises(ConfigError, match=r"--config nope: file not found, and no shipped config has that name "
                       r"\(shipped: .*tiny_cpu"):
        read_config_file("nope")
