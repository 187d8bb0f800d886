"""The record ↔ Megatron-LM flags map (emo_plugin/model/megatron_lm_args.py), read both ways."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from emo_plugin.errors import ConfigError
from emo_plugin.megatron_lm.arguments import add_emo_arguments, with_size_flags
from emo_plugin.model.megatron_lm_args import megatron_lm_flags, record_from_megatron_lm_args
from emo_plugin.model.sizes import SIZES


def parse(flags: list[str]) -> argparse.Namespace:
    from megatron.training.arguments import add_megatron_arguments

    parser = add_emo_arguments(add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False)))
    return parser.parse_args(flags)


def read_back(flags: list[str], like) -> object:
    return record_from_megatron_lm_args(parse(flags), vocab_size=like.vocab_size, eos_token_id=like.eos_token_id,
                                        pad_token_id=like.pad_token_id)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_named_size_reads_back_from_its_flags(size):
    assert read_back(megatron_lm_flags(SIZES[size]), SIZES[size]) == SIZES[size]


def test_grouped_query_attention_per_layer_pools_and_qk_norm_read_back():
    record = dataclasses.replace(SIZES["tiny"], num_query_groups=2, qk_layernorm=True, eos_grouping="starts",
                                 pool_min_per_layer=(2, 3), pool_max_per_layer=(8, 4), num_inert_experts=2)
    assert read_back(megatron_lm_flags(record), record) == record


def test_flags_after_the_size_win():
    flags = with_size_flags(["--emo-size", "tiny", "--num-layers", "4", "--emo-pool-eval", "6"])
    record = read_back(flags, SIZES["tiny"])
    assert (record.num_layers, record.pool_eval, record.hidden_size) == (4, 6, SIZES["tiny"].hidden_size)


def test_an_unknown_size_is_left_to_argparse():
    assert with_size_flags(["--emo-size", "huge"]) == ["--emo-size", "huge"]


@pytest.mark.parametrize("extra, named", [
    (["--normalization", "LayerNorm"], "--normalization is 'LayerNorm': an EMO model needs --normalization RMSNorm"),
    (["--position-embedding-type", "learned_absolute"], "--position-embedding-type rope"),
    (["--moe-layer-freq", "2"], "--moe-layer-freq is 2"),
    (["--kv-channels", "32"], "--kv-channels 32"),
    (["--mtp-num-layers", "1"], "--mtp-num-layers is 1"),
])
def test_settings_an_emo_model_cannot_have_are_named(extra, named):
    with pytest.raises(ConfigError, match="EMO cannot train or export") as error:
        read_back(megatron_lm_flags(SIZES["tiny"]) + extra, SIZES["tiny"])
    assert named in str(error.value)


def test_tied_embeddings_and_missing_flags_are_named():
    dropped = ("--swiglu", "--untie-embeddings-and-output-weights")
    flags = [f for f in megatron_lm_flags(SIZES["tiny"]) if f not in dropped]
    with pytest.raises(ConfigError) as error:
        read_back(flags, SIZES["tiny"])
    assert "--swiglu" in str(error.value) and "--untie-embeddings-and-output-weights" in str(error.value)


def test_pool_sizes_are_required_without_a_size():
    flags = megatron_lm_flags(SIZES["tiny"])
    cut = flags.index("--emo-pool-min")
    with pytest.raises(ConfigError, match=r"--emo-pool-min not set: give the pool sizes, or --emo-size NAME"):
        read_back(flags[:cut] + flags[cut + 2:], SIZES["tiny"])
