"""emo-pretrain-megatron's command line (emo_plugin/cli/pretrain_megatron.py): its --help and its exit codes."""

from __future__ import annotations

import sys

import pytest

from emo_plugin import checkpoint
from emo_plugin.cli.pretrain_megatron import exit_code, exit_status, parse_emo_run


@pytest.mark.usefixtures("megatron_lm_globals")
def test_help_says_what_the_command_is_and_lists_the_emo_flags(capsys):
    with pytest.raises(SystemExit) as done:
        parse_emo_run(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    assert text.startswith("usage: emo-pretrain-megatron")
    assert "Megatron-LM's training loop" in text and "docs/megatron_lm.md" in text
    for flag in ("--emo-size", "--emo-pool-min", "--emo-lb-scope", "--emo-intra-document-attention",
                 "--tensor-model-parallel-size"):
        assert flag in text


def _saved(root, iteration: int) -> str:
    folder = checkpoint.iteration_dir(root, iteration)
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text("{}")
    (root / checkpoint.LATEST).write_text(f"{iteration}\n")
    return str(root)


def test_a_run_short_of_train_iters_asks_to_be_requeued(tmp_path):
    assert exit_code(_saved(tmp_path, 40), train_iters=100) == 75


def test_a_finished_run_and_a_run_without_checkpoints_exit_zero(tmp_path):
    assert exit_code(_saved(tmp_path / "a", 100), train_iters=100) == 0
    assert exit_code(str(tmp_path / "nothing"), train_iters=100) == 0
    assert exit_code(None, train_iters=100) == 0


def test_an_early_stop_saved_short_of_train_iters_exits_75(tmp_path):
    """Megatron-LM ends --exit-signal-handler / --exit-duration-in-mins stops with sys.exit(0) after saving."""
    assert exit_status(lambda: sys.exit(0), _saved(tmp_path, 40), train_iters=100) == 75
    assert exit_status(lambda: None, str(tmp_path), train_iters=40) == 0


@pytest.mark.parametrize(("megatron_exit", "status"), [(None, 1), (16, 16)])
def test_megatron_lm_failures_keep_a_failing_status(tmp_path, megatron_exit, status):
    """A bare sys.exit() is how Megatron-LM stops on a checkpoint it cannot load: not a finished run, no requeue."""
    with pytest.raises(SystemExit) as failed:
        exit_status(lambda: sys.exit(megatron_exit), _saved(tmp_path, 40), train_iters=100)
    assert failed.value.code == status
