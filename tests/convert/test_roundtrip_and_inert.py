"""HF → Megatron → HF reproduces every tensor bit for bit; EP padding adds inert experts that never route."""

import torch

from emo_plugin.convert import export_to_hf, import_from_hf
from emo_plugin.convert import megatron_keys as K
from emo_plugin.convert.dist_reader import DistCheckpointReader
from emo_plugin.convert.hf_weights import HfWeights
from tests.convert.checkpoint_workers import TINY


def hf_tensors(folder):
    weights = HfWeights(folder)
    return {name: weights.get(name) for name in weights.names()}


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def test_export_import_export_is_bit_identical(hf_folder, tmp_path):
    import_from_hf(hf_folder, tmp_path / "imported", progress=False)
    export_to_hf(tmp_path / "imported", tmp_path / "again", dtype="fp32", progress=False)
    assert_identical(hf_tensors(hf_folder), hf_tensors(tmp_path / "again"))
    assert (tmp_path / "again" / "tokenizer.json").is_file()  # tokenizer travels with the import


def test_bf16_export_roundtrips_in_bf16(dist_checkpoint, tmp_path):
    export_to_hf(dist_checkpoint, tmp_path / "bf16", dtype="bf16", progress=False)
    import_from_hf(tmp_path / "bf16", tmp_path / "imported", dtype="bf16", progress=False)
    export_to_hf(tmp_path / "imported", tmp_path / "again", dtype="bf16", progress=False)
    first = hf_tensors(tmp_path / "bf16")
    assert all(t.dtype == torch.bfloat16 for t in first.values())
    assert_identical(first, hf_tensors(tmp_path / "again"))


def test_import_pads_to_expert_parallel_size_with_inert_experts(hf_folder, tmp_path, megatron_single_rank):
    summary = import_from_hf(hf_folder, tmp_path / "ep3", target_expert_parallel_size=3, progress=False)
    assert summary["inert_experts"] == 1  # 8 routed → 9 = 3 × 3
    reader = DistCheckpointReader(tmp_path / "ep3")
    assert reader.shape(K.ROUTER) == (2, 9, 32)
    assert torch.all(reader.read(K.ROUTER, 0)[8] == 0) and torch.all(reader.read(K.EXPERT_FC1, 1, 8) == 0)

    from megatron.core import dist_checkpointing

    from emo_plugin.convert.megatron_host import build_host_model

    arch = TINY.with_inert_padding(3)
    model = build_host_model(arch).eval()
    dist_checkpointing.load(model.sharded_state_dict(prefix=""), str(reader.path))
    routed = []
    for layer in model.decoder.layers:
        layer.mlp.router.register_forward_hook(lambda m, args, out: routed.append(out[1].detach()))
    tokens = torch.randint(3, TINY.vocab_size, (4, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model(tokens, torch.arange(32).expand_as(tokens), None)
        model.train()
        from emo_plugin.moe.routing_ids import build_routing_ids

        ids = build_routing_ids(tokens_BS=tokens, eod_token_id=2, max_documents_per_sequence=16)
        model(tokens, torch.arange(32).expand_as(tokens), None, padding_mask=ids)
    assert len(routed) == 4
    for routing_map in routed:
        assert routing_map.shape[-1] == 9
        assert not routing_map[..., 8].any()  # the inert expert is never chosen
        assert routing_map[..., :8].sum(-1).eq(2).all()

    export_to_hf(tmp_path / "ep3", tmp_path / "back", dtype="fp32", progress=False)
    assert_identical(hf_tensors(hf_folder), hf_tensors(tmp_path / "back"))  # inert experts dropped
