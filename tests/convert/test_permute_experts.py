"""A placement permutes experts without changing the model: HF folders, dist checkpoints, and EP2/EP4 reloads."""

import numpy as np
import pytest
import torch

from emo_plugin.cli.place_experts import main as place_main
from emo_plugin.convert import export_to_hf
from emo_plugin.convert.hf_weights import HfWeights
from emo_plugin.convert.permute_experts import permute_dist_checkpoint, permute_hf_folder
from emo_plugin.errors import ConversionError
from tests.convert.checkpoint_workers import TINY
from tests.parallel.harness import Layout, run_ranks

ORDERS = {0: [5, 2, 7, 0, 1, 6, 3, 4], 1: [3, 1, 0, 2, 7, 6, 5, 4]}
TOKENS = torch.randint(3, 64, (3, 17), generator=torch.Generator().manual_seed(1))


def hf_logits(folder, pool_size=None):
    from emo_plugin.hf import EmoForCausalLM

    model = EmoForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    model.set_inference_pool_size(pool_size)
    with torch.no_grad():
        return model(TOKENS).logits


@pytest.mark.parametrize("pool_size", [None, 4])  # plain top-k, and EMO document pools
def test_permuted_hf_folder_computes_the_same_logits(hf_folder, tmp_path, pool_size):
    permute_hf_folder(hf_folder, tmp_path / "placed", ORDERS)
    torch.testing.assert_close(hf_logits(tmp_path / "placed", pool_size), hf_logits(hf_folder, pool_size),
                               rtol=1e-5, atol=1e-5)
    before, after = HfWeights(hf_folder), HfWeights(tmp_path / "placed")
    moved = "model.layers.0.mlp.experts.0.down_proj.weight"
    assert torch.equal(after.get(moved), before.get("model.layers.0.mlp.experts.5.down_proj.weight"))
    assert torch.equal(after.get("model.layers.1.mlp.gate.weight")[:8],
                       before.get("model.layers.1.mlp.gate.weight")[ORDERS[1]])
    assert torch.equal(after.get("model.layers.1.mlp.gate.weight")[8], before.get("model.layers.1.mlp.gate.weight")[8])


def test_permuted_dist_checkpoint_exports_the_permuted_folder(dist_checkpoint, hf_folder, tmp_path):
    permute_dist_checkpoint(dist_checkpoint, tmp_path / "placed", ORDERS)
    export_to_hf(tmp_path / "placed", tmp_path / "hf", dtype="fp32", progress=False)
    permute_hf_folder(hf_folder, tmp_path / "hf_placed", ORDERS)
    a, b = HfWeights(tmp_path / "hf"), HfWeights(tmp_path / "hf_placed")
    assert sorted(a.names()) == sorted(b.names())
    assert all(torch.equal(a.get(n), b.get(n)) for n in a.names())
    assert (tmp_path / "placed" / "expert_placement.json").is_file()


def forward_from_checkpoint(layout, root: str, tokens, pool_eval: int):
    """Rank worker: the tiny record's model under ``layout``, loaded from the (resharded) checkpoint: eval logits."""
    import dataclasses

    from megatron.core import parallel_state as ps

    from emo_plugin import checkpoint
    from emo_plugin.model.build import build_emo_gpt_model
    from emo_plugin.model.megatron_config import transformer_config

    config = transformer_config(dataclasses.replace(TINY, pool_eval=pool_eval), use_cpu_initialization=True,
                                moe_token_dispatcher_type="allgather", expert_model_parallel_size=layout.ep)
    model = build_emo_gpt_model(config, vocab_size=TINY.vocab_size, max_sequence_length=TINY.seq_length,
                                use_transformer_engine=False, host_execution=True, rotary_base=TINY.rotary_base)
    model.load_state_dict(checkpoint.load(root, 0, {"model": model.sharded_state_dict(prefix="")})["model"])
    assert ps.get_expert_model_parallel_world_size() == layout.ep
    with torch.no_grad():
        return model.eval()(tokens, torch.arange(tokens.shape[1]).expand_as(tokens), None)


@pytest.mark.parametrize("ep,pool_eval", [(2, 8), (4, 8), (4, 4)])  # plain top-k; pools of 4 at EP4
def test_permuted_checkpoint_resharded_to_expert_parallel_ranks(dist_checkpoint, megatron_model, tmp_path, ep,
                                                               pool_eval):
    from emo_plugin.moe.eval_pool import evaluation_pool

    permute_dist_checkpoint(dist_checkpoint, tmp_path / "placed", ORDERS)
    results = run_ranks(forward_from_checkpoint, ep, Layout(ep=ep), root=str(tmp_path / "placed"), tokens=TOKENS,
                        pool_eval=pool_eval)
    with torch.no_grad(), evaluation_pool(megatron_model, pool_eval):
        expected = megatron_model(TOKENS, torch.arange(17).expand_as(TOKENS), None)
    for logits in results:
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_cli_places_from_usage_and_refuses_rank_limited_models(hf_folder, tmp_path, capsys):
    rng = np.random.default_rng(0)
    usage = {f"usage_layer{i}": rng.dirichlet(np.full(8, 0.2), size=40).astype(np.float32) for i in range(2)}
    np.savez(tmp_path / "usage.npz", num_tokens=rng.integers(5, 50, size=40), **usage)
    assert place_main(["--usage", str(tmp_path / "usage.npz"), "--ranks", "4", "--checkpoint", str(hf_folder),
                       "--output", str(tmp_path / "placed")]) == 0
    summary = capsys.readouterr().out
    assert '"kept_after"' in summary
    torch.testing.assert_close(hf_logits(tmp_path / "placed"), hf_logits(hf_folder), rtol=1e-5, atol=1e-5)

    import json

    config = json.loads((hf_folder / "config.json").read_text())
    config["emo_routing"] |= dict(pool_max_ranks=1, pool_rank_groups=2)
    limited = tmp_path / "limited"
    limited.mkdir()
    for f in hf_folder.iterdir():
        (limited / f.name).write_bytes(f.read_bytes())
    (limited / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="rank-limited pools"):
        permute_hf_folder(limited, tmp_path / "out", ORDERS)


def test_cli_refuses_a_dist_checkpoint_padded_for_another_layout(hf_folder, tmp_path):
    from emo_plugin.convert import import_from_hf

    import_from_hf(hf_folder, tmp_path / "ep3", target_expert_parallel_size=3, progress=False)  # 8 + 1 inert rows
    rng = np.random.default_rng(0)
    usage = {f"usage_layer{i}": rng.dirichlet(np.full(8, 0.2), size=10).astype(np.float32) for i in range(2)}
    np.savez(tmp_path / "usage.npz", num_tokens=np.full(10, 9), **usage)
    args = ["--usage", str(tmp_path / "usage.npz"), "--checkpoint", str(tmp_path / "ep3"), "--output",
            str(tmp_path / "out")]
    assert place_main([*args, "--ranks", "3"]) == 0  # 9 rows = 3 × 3: rank 2 holds 2 experts + the inert slot
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert place_main([*args, "--ranks", "4", "--force"]) == 2  # 9 rows cannot be 4 blocks of 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written  # refused before touching the output
