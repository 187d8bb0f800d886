"""Config parsing and validation: every bad value is refused before a model is built, naming the field."""

from __future__ import annotations

import pytest

from emo_plugin.cli.pretrain import main, parse_config
from emo_plugin.errors import ConfigError
from emo_plugin.model.sizes import SIZES
from emo_plugin.run.config import TrainingConfig
from emo_plugin.run.config_file import DEFAULT_CONFIG
from emo_plugin.run.flops import active_params_per_token, flops_per_token
from emo_plugin.run.transformer import build_transformer_config
from tests.helpers import checked, run_record


def cfg_from(*argv: str) -> TrainingConfig:
    return parse_config(["--config", str(DEFAULT_CONFIG), *argv])


def test_yaml_then_dotted_then_megatron_flags():
    cfg = cfg_from(
        "--optimizer.lr=1e-3", "--micro-batch-size", "2", "--train-iters", "7", "--emo.pool_eval=8",
        "--sequence-parallel",
    )
    assert cfg.optimizer.lr == 1e-3 and cfg.batch.micro_batch_size == 2 and cfg.schedule.train_iters == 7
    assert cfg.emo.pool_eval == 8 and cfg.parallel.sequence_parallel is True
    assert cfg.data.corpus.endswith("corpus.jsonl")  # from the YAML
    assert parse_config([]).model.size == "tiny"  # no arguments: the embedded default


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch.micro_batch_size=abc"], "batch.micro_batch_size='abc': expected an integer"),
        (["--model.nonsense=1"], "model.nonsense: unknown field"),
        (["--bogus.x=1"], "unknown section 'bogus'"),
        (["--nan_policy=ignore"], "nan_policy='ignore': expected 'stop' or 'skip'"),
        (["--model.size=huge"], "model.size='huge': expected one of"),
        (["--tensor-model-parallel-size", "2"], "parallel.tensor_model_parallel_size=2: expected 1 on CPU"),
        (["--precision.dtype=bf16"], "precision.dtype='bf16': expected 'fp32' on CPU"),
        (["--emo.pool_min=1"], "emo.pool_min=1 must be ≥ moe_router_topk=2"),
        (["--emo.eos_grouping=before"], "emo.eos_grouping='before': expected one of ends, starts"),
        (["--emo.pool_max_per_layer=8,8,8"], "emo.pool_max_per_layer=[8, 8, 8]: expected one entry per layer, 2"),
        (["--emo.pool_min_per_layer=8,1"], "emo.pool_min_per_layer: layer 1 has pool_min 1, below moe_router_topk=2"),
        (["--emo.pool_max_per_layer=8,2000000"], "emo.pool_max_per_layer=(8, 2000000): expected at most"),
        (["--schedule.lr_warmup_iters=1000"], "schedule.lr_warmup_iters=1000: expected between 0"),
        (["--optimizer.adam_beta2=1.5"], "optimizer.adam_beta2=1.5: expected a float in [0, 1)"),
        (["--model.transformer_impl=apex"], "model.transformer_impl='apex': expected 'transformer_engine' or 'local'"),
        (["--optimizer.use_distributed_optimizer=false", "--optimizer.overlap_param_gather=true"],
         "optimizer.overlap_param_gather=True: expected false unless optimizer.use_distributed_optimizer"),
    ],
)
def test_invalid_values_name_the_field(argv, message):
    with pytest.raises(ConfigError, match=None) as info:
        checked(cfg_from(*argv))
    assert message in str(info.value)


def test_batch_arithmetic_checked_against_world_size():
    cfg = cfg_from("--global-batch-size", "6", "--micro-batch-size", "4")
    with pytest.raises(
        ConfigError,
        match="batch.global_batch_size=6: expected a multiple of micro_batch_size × data-parallel size = 4 × 1",
    ):
        checked(cfg, world_size=1)


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    assert main(["--config", str(DEFAULT_CONFIG), "--lr=-1"]) == 2
    assert "optimizer.lr=-1.0: expected a positive float" in capsys.readouterr().err


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--emo.pool_min", "--tensor-model-parallel-size", "--global-batch-size", "--save", "--tensorboard-dir",
        "--nan_policy",
    ):
        assert flag in text
    assert "per-document pool" in text


def test_model_sizes_match_the_recipe():
    emo = SIZES["emo_1b14b"]
    assert (emo.num_layers, emo.hidden_size, emo.num_attention_heads, emo.num_query_groups) == (16, 2048, 16, 16)
    assert (emo.num_moe_experts + emo.num_shared_experts, emo.moe_router_topk + emo.num_shared_experts) == (128, 8)
    assert (emo.moe_ffn_hidden_size, emo.vocab_size, emo.seq_length, emo.rotary_base) == (1024, 100_352, 4096, 500_000)
    assert (emo.pool_min, emo.pool_max, emo.pool_eval, emo.lb_coeff, emo.z_loss_coeff) == (8, 128, 32, 0.1, 0.001)
    std = SIZES["stdmoe_1b14b"]
    assert std.pool_min == std.pool_max == std.pool_eval >= std.num_moe_experts
    # ~1.3B active parameters per token (embedding lookup excluded, output layer included).
    # Counted by hand: per layer q, k, v, o = 4 · 2048² (16 KV groups of 128) = 16,777,216; router 2048 · 127 =
    # 260,096; 7 routed + 1 shared SwiGLU experts 8 · 3 · 2048 · 1024 = 50,331,648; 16 layers = 1,077,903,360;
    # output layer 2048 · 100,352 = 205,520,896. Total 1,283,424,256 (~1.3B active).
    assert active_params_per_token(emo, emo.vocab_size) == 1_283_424_256
    # 6 · 1,283,424,256 + attention 12 · 16 · 2048 · 4096 = 7,700,545,536 + 1,610,612,736.
    assert flops_per_token(emo, emo.vocab_size, 4096) == 9_311_158_272
    assert set(SIZES) >= {"tiny", "small", "emo_1b14b", "stdmoe_1b14b"}


def test_eos_grouping_and_per_layer_pools_reach_the_record_and_the_routers_config():
    cfg = cfg_from("--emo.eos_grouping=starts", "--emo.pool_min_per_layer=8,2", "--emo.pool_max_per_layer", "[8, 4]")
    checked(cfg)
    assert run_record(cfg).eos_grouping == "starts"
    emo = build_transformer_config(cfg, run_record(cfg), "cpu").emo
    assert (emo.pool_range(1), emo.pool_range(2)) == ((8, 8), (2, 4))
    default = cfg_from()
    record = run_record(default)
    assert record.eos_grouping == "ends"
    emo = build_transformer_config(default, record, "cpu").emo
    assert emo.pool_range(2) == (record.pool_min, record.pool_max)


def test_sizes_build_valid_megatron_configs():
    for name in SIZES:
        cfg = cfg_from(f"--model.size={name}")
        config = build_transformer_config(cfg, run_record(cfg), "cpu")
        record = run_record(cfg)
        assert config.num_moe_experts == record.num_moe_experts and config.emo.pool_eval == record.pool_eval


@pytest.mark.parametrize("field", ["data.corpus", "data.tokenizer_model"])
def test_missing_data_files_are_named_before_anything_is_built(field, tmp_path):
    cfg = parse_config(["--config", "tiny_cpu", f"--{field}={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        checked(cfg)
