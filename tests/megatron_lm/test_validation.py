"""emo-pretrain-megatron refuses what EMO cannot train before any process group or GPU work, naming the flag
(emo_plugin/megatron_lm/validation.py), and records the run's model in Megatron-LM's args."""

from __future__ import annotations

import pytest

from emo_plugin.cli.pretrain_megatron import parse_emo_run
from emo_plugin.errors import ConfigError, DataError
from tests.cuda_free.megatron_lm_runs import MEGATRON_LM_ON_CPU, TOKENIZER

pytestmark = pytest.mark.usefixtures("megatron_lm_globals")


def command(corpus_prefix: str, *extra: str) -> list[str]:
    return ["--emo-size", "tiny", *MEGATRON_LM_ON_CPU, "--micro-batch-size", "4", "--global-batch-size", "8",
            "--train-iters", "2", "--lr", "1e-3", "--tokenizer-model", TOKENIZER, "--data-path", corpus_prefix,
            "--eval-iters", "0", "--eval-interval", "10", *extra]


def test_a_valid_command_gives_the_record_and_stores_it_in_args(corpus_prefix):
    args, run = parse_emo_run(command(corpus_prefix, "--emo-pool-eval", "6", "--emo-lb-scope", "global_batch"))
    assert (run.record.vocab_size, run.record.eos_token_id, run.record.pad_token_id) == (4096, 2, 0)
    assert run.record.pool_eval == 6 and args.emo_model == run.record.to_dict()
    transformer = run.model_config.transformer
    assert transformer.emo.lb_scope == "global_batch" and transformer.emo.seed == args.seed
    assert transformer.moe_aux_loss_coeff == 0.0 and transformer.moe_z_loss_coeff == run.record.z_loss_coeff
    # Megatron-LM's log names EMO's losses after these flags
    assert (args.moe_router_load_balancing_type, args.moe_z_loss_coeff) == ("aux_loss", run.record.z_loss_coeff)


@pytest.mark.parametrize("extra, message", [
    (["--moe-aux-loss-coeff", "0.01"], "EMO owns load balancing; set --emo-lb-coeff instead"),
    (["--moe-router-load-balancing-type", "seq_aux_loss"], "EMO owns load balancing"),
    (["--moe-z-loss-coeff", "0.1"], "--moe-z-loss-coeff 0.1: set --emo-z-loss-coeff instead"),
    (["--emo-pool-min", "1"], r"emo.pool_min=1 must be ≥ moe_router_topk=2 .*\(emo.<field> is set by --emo-<field>\)"),
    (["--emo-max-documents-per-sequence", "2000000"], "--emo-max-documents-per-sequence 2000000: expected at most"),
    (["--hidden-size", "66"], r"Megatron-LM refused the arguments: assert args.hidden_size % args.num_attention_heads"),
    (["--hidden-size", "68"], "--hidden-size 68: expected an even head dimension for RoPE"),
    (["--calculate-per-token-loss"], "calculate_per_token_loss=True is not supported with EMO"),
    (["--emo-intra-document-attention"], "--emo-intra-document-attention: thd packed sequences run only in"),
    (["--tokenizer-type", "GPT2BPETokenizer"], "--tokenizer-type GPT2BPETokenizer: expected one of"),
])
def test_refusals_name_the_flag(corpus_prefix, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_emo_run(command(corpus_prefix, *extra))


def test_mock_data_is_refused(corpus_prefix):
    flags = command(corpus_prefix)
    cut = flags.index("--data-path")
    with pytest.raises(ConfigError, match="--mock-data: EMO trains on emo_plugin's indexed datasets"):
        parse_emo_run(flags[:cut] + flags[cut + 2:] + ["--mock-data"])


def test_a_missing_dataset_is_refused_with_its_file(corpus_prefix):
    with pytest.raises(ConfigError, match=r"--data-path /nowhere/corpus: /nowhere/corpus.bin does not exist"):
        parse_emo_run(command(corpus_prefix, "--data-path", "/nowhere/corpus"))


def test_a_dataset_of_another_tokenizer_is_refused(corpus_prefix, tmp_path):
    from emo_plugin.data.tokenizer import train_tokenizer
    from tests.training.conftest import REPO

    other = train_tokenizer([REPO / "examples/data/corpus.jsonl"], tmp_path / "other", vocab_size=400)
    with pytest.raises((ConfigError, DataError), match="tokenizer"):
        parse_emo_run(command(corpus_prefix, "--tokenizer-model", str(other)))


def test_transformer_engine_is_never_silently_dropped(corpus_prefix):
    from megatron.core.extensions.transformer_engine import HAVE_TE

    if HAVE_TE:
        pytest.skip("only where Transformer Engine is absent")  # pragma: no cover - CI has no TE
    with pytest.raises(ConfigError, match="--transformer-impl transformer_engine: Transformer Engine is not"):
        parse_emo_run(command(corpus_prefix, "--transformer-impl", "transformer_engine"))
