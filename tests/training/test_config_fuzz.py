"""Fuzzing the config: every field set to 0, a negative, a huge value or garbage, every section misspelled.

Each case either passes validation or is refused with a ``ConfigError`` that names the field; anything else (a
traceback from deeper code, a signal, a case that takes long) fails. The cases run in-process through the same
parse + validate path as ``emo-pretrain --check-config``, so ~300 cases take a few seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import pytest

from emo_plugin.cli.pretrain import parse_config
from emo_plugin.errors import ConfigError
from emo_plugin.run.config import SECTIONS, TrainingConfig, field_types, set_value
from emo_plugin.run.config_file import DEFAULT_CONFIG
from tests.helpers import checked
from tests.reliability import record

NUMERIC = ("0", "-1", "-5", "1e30", "99999999999999999999", "1e400", "nan", "2.5")
GARBAGE = ("", "garbage/\u00fc\u00df", "[1, 2", "{a: 1}", "None", "-1")
SECONDS_PER_CASE = 2.0


def fuzz_cases() -> list[tuple[str, str]]:
    cases = []
    for section, section_cls in [(None, TrainingConfig), *SECTIONS.items()]:
        types = field_types(section_cls)
        for f in dataclasses.fields(section_cls):
            if section is None and f.name in SECTIONS:
                continue
            key = f.name if section is None else f"{section}.{f.name}"
            text = str(types[f.name])
            values = NUMERIC if ("int" in text or "float" in text) else GARBAGE
            cases += [(key, value) for value in values]
    for section in SECTIONS:
        cases.append((f"{section[:-1]}{section[-1] * 2}.x", "1"))  # misspelled section, e.g. 'modell'
    return cases


def run_case(base: TrainingConfig, key: str, value: str) -> str | None:
    """None if accepted, else the error message; raises (and so fails the test) on anything but ConfigError."""
    try:
        cfg = copy.deepcopy(base)
        set_value(cfg, key, value)  # what parse_config does with '--key=value'
        checked(cfg, world_size=1)
    except ConfigError as error:
        return str(error)
    return None


def test_every_field_is_either_accepted_or_refused_by_name():
    cases = fuzz_cases()
    base = parse_config(["--config", str(DEFAULT_CONFIG)])
    refused = accepted = 0
    slowest = 0.0
    for key, value in cases:
        start = time.monotonic()
        message = run_case(base, key, value)
        slowest = max(slowest, time.monotonic() - start)
        assert time.monotonic() - start < SECONDS_PER_CASE, f"--{key}={value} took too long"
        if message is None:
            accepted += 1
            continue
        refused += 1
        section = key.split(".")[0]
        assert key in message or (section in message and "unknown section" in message) or \
            key.split(".")[-1] in message, f"--{key}={value!r}: message does not name the field: {message}"
    assert refused > accepted > 0
    record("config fuzz: every field 0 / negative / huge / NaN / garbage, every section misspelled",
           seen="each case is refused with 'emo-pretrain: config error: <field>=<value>: expected ...' naming the "
                "field, or accepted as valid; no traceback, signal or hang (the test asserts both kinds occur)",
           kept="nothing is written before the config is valid", area="config")


ISSUE_CASES = [
    ("--data.seq_length=0", "data.seq_length=0: expected an integer >= 1"),
    ("--data.seq_length=-5", "data.seq_length=-5: expected an integer >= 1"),
    ("--model.num_layers=0", "model.num_layers=0: expected an integer >= 1"),
    ("--model.moe_router_topk=0", "model.moe_router_topk=0: expected an integer >= 1"),
    ("--model.hidden_size=63", "model.hidden_size=63: expected a multiple of model.num_attention_heads=4"),
    ("--data.split=0,0,1", "data.split='0,0,1': expected a positive train weight"),
    ("--seed=-1", "seed=-1: expected an integer in [0, 4294967296)"),
    ("--eval.iters=-1", "eval.iters=-1: expected an integer >= 0"),
    ("--data.split=98,0,2", "data.split='98,0,2': expected a positive validation weight"),
    ("--model.hidden_size=10000000", "model.size='tiny', model.hidden_size=10000000: the model's weights"),
    ("--data.seq_length=10000000", "batch.micro_batch_size/data.seq_length: one micro-batch of 4 × 10000000 tokens"),
    ("--train-iters=1e12", "schedule.train_iters/eval.iters: 8160000000032 samples"),  # (1e12 + 2 × (1e10 + 2)) × 8
    ("--eval.iters=1e12", "schedule.train_iters/eval.iters: 40000000002400 samples"),  # (300 + 1e12 × 5) × 8
    ("--emo.max_documents_per_sequence=1e30", "emo.max_documents_per_sequence=1000000000000000019884624838656: "
                                              "expected at most 1048575"),
    ("--optimizer.lr=nan", "optimizer.lr=nan: expected a finite number"),
    ("--emo.pool_max=1e30", "emo.pool_max=1000000000000000019884624838656: expected at most 1048576"),
    ("--modle.size=tiny", "unknown section 'modle' (did you mean 'model'?)"),
    ("--data.tokenizer_model=README.md", "data.tokenizer_model='README.md': README.md: not a sentencepiece model"),
]


@pytest.mark.parametrize("arg, expected", ISSUE_CASES, ids=[a for a, _ in ISSUE_CASES])
def test_issue_cases_are_config_errors(arg, expected, capsys, tmp_path):
    from emo_plugin.cli.pretrain import main

    assert main(["--config", str(DEFAULT_CONFIG), f"--checkpoint.save={tmp_path}/ckpt", arg, "--check-config"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    record(f"emo-pretrain {arg}", seen=err, kept="nothing written (refused before any model or process group)",
           area="config")


def test_config_file_mistakes(tmp_path, capsys):
    from emo_plugin.cli.pretrain import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  size: tiny\n   num_layers: 2\n")
    listy = tmp_path / "list.yaml"
    listy.write_text("- model\n")
    for path, expected, case in [
        (tmp_path / "missing.yaml", "missing.yaml: file not found", "emo-pretrain --config <missing file>"),
        (bad, "bad.yaml: line 3, column 14: malformed YAML", "emo-pretrain --config <malformed YAML>"),
        (listy, "expected a mapping of sections, got list", "emo-pretrain --config <YAML list>"),
    ]:
        assert main(["--config", str(path), "--check-config"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        record(case, seen=err, kept="the config file is only read", area="config")


def test_bracketed_paths_as_help_shows_them(tmp_path):
    cfg = parse_config(["--config", str(DEFAULT_CONFIG), "--data.paths=[0.3, a, 0.7, 'b']"])
    assert cfg.data.paths == ["0.3", "a", "0.7", "b"]
    expected = r"data.paths='a': expected an indexed dataset prefix \(a.bin does not exist"
    with pytest.raises(ConfigError, match=expected) as info:
        checked(cfg)
    record("emo-pretrain --data.paths='[0.3, a, 0.7, b]' (the form --help shows)",
           seen=f"brackets and quotes are syntax: weights 0.3/0.7, prefixes a/b; then: {info.value}",
           kept="nothing written", area="config")


def test_valid_default_passes_and_check_config_exits_zero(capsys):
    from emo_plugin.cli.pretrain import main

    assert main(["--config", str(DEFAULT_CONFIG), "--check-config"]) == 0
    assert "config OK" in capsys.readouterr().err
