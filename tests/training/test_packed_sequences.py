"""THD packing for intra-document attention on GPU, checked on CPU against independent references.

References: the dataset's own dense intra-document mask and reset position ids (the host path), per-row
``unique_consecutive`` of the document ids, a per-sequence Python loop for TE's context-parallel zigzag, and
attention computed per document with ``scaled_dot_product_attention`` vs the dense-mask attention.
"""

from __future__ import annotations

import json

import pytest
import torch

from emo_plugin.errors import DataError
from emo_plugin.moe.routing_ids import build_routing_ids, split_routing_ids
from emo_plugin.training.packed_sequences import (
    ThdPacking,
    cp_partition_index,
    pack_micro_batch,
    packed_layout,
    packed_seq_params,
)
from tests.thd_reference import dense_mask, with_thd_reference_attention

MAX_DOCS = 64


def _synthetic_batch(b: int, s: int, seed: int, padding_row: int | None = None) -> dict:
    """Random document lengths per row; optionally one all-padding row (the dataset's padding sample)."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.rand(b, s, generator=generator) < 0.15
    doc_ids = torch.cumsum(starts, 1) + 1
    if padding_row is not None:
        doc_ids[padding_row] = 0
    tokens = torch.randint(1, 1000, (b, s), generator=generator)
    return {
        "tokens": tokens,
        "labels": torch.roll(tokens, -1, 1),
        "loss_mask": torch.ones(b, s) if padding_row is None else (doc_ids > 0).float(),
        "position_ids": torch.arange(s).expand(b, s).clone(),
        "doc_ids": doc_ids,
        "routing_ids": build_routing_ids(doc_ids_BS=doc_ids, max_documents_per_sequence=MAX_DOCS, generator=generator),
    }


def _row_runs(doc_ids_BS: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of equal document id, row after row (independent of the packing code)."""
    return torch.cat([torch.unique_consecutive(row, return_counts=True)[1] for row in doc_ids_BS])




@pytest.mark.parametrize("b, s", [(1, 50), (3, 40)])
def test_cu_seqlens_follow_document_ids(b, s):
    batch = _synthetic_batch(b, s, seed=b * 100 + s, padding_row=1 if b > 1 else None)
    packed, cu, max_seqlen = pack_micro_batch(batch, ThdPacking(max_documents=MAX_DOCS))
    runs = _row_runs(batch["doc_ids"])
    assert cu.dtype == torch.int32
    assert torch.equal(cu[1:] - cu[:-1], runs.to(torch.int32))
    assert max_seqlen == int(runs.max())
    for key in ("tokens", "labels", "loss_mask", "doc_ids"):
        assert torch.equal(packed[key], batch[key].reshape(1, -1)), key
    # routing ids: same salts, one segment number per document across the packed row, padding stays 0
    segments, salts = split_routing_ids(packed["routing_ids"][0])
    original_segments, original_salts = split_routing_ids(batch["routing_ids"].reshape(-1))
    assert torch.equal(salts, original_salts)
    assert torch.equal(segments == 0, original_segments == 0)
    valid_runs = torch.unique_consecutive(segments[segments > 0])
    assert torch.equal(valid_runs, torch.arange(1, len(valid_runs) + 1))
    assert len(valid_runs) == sum(len(torch.unique(r[r > 0])) for r in batch["doc_ids"])


def test_too_many_documents_for_the_router_is_refused():
    batch = _synthetic_batch(4, 60, seed=3)
    count = sum(len(torch.unique(r)) for r in batch["doc_ids"])
    with pytest.raises(DataError, match=rf"holds {count} document segments.*emo.max_documents_per_sequence=10"):
        pack_micro_batch(batch, ThdPacking(max_documents=10))


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory) -> str:
    """A corpus of short documents (a few to ~60 tokens), so every 128-token sample holds several."""
    from emo_plugin.data.preprocess import preprocess_jsonl
    from tests.training.conftest import REPO

    words = (REPO / "examples/data/corpus.jsonl").read_text()[:20000].split()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 40, (120,), generator=generator).tolist()
    offsets = torch.randint(0, len(words) - 40, (120,), generator=generator).tolist()
    out = tmp_path_factory.mktemp("short_docs")
    lines = [json.dumps({"text": " ".join(words[o : o + n])}) for o, n in zip(offsets, lengths)]
    (out / "docs.jsonl").write_text("\n".join(lines) + "\n")
    tokenizer = REPO / "examples/data/tokenizer.model"
    preprocess_jsonl([out / "docs.jsonl"], tokenizer, out / "docs_text_document", progress=False)
    return str(out / "docs_text_document")


@pytest.mark.parametrize("eos_grouping", ["ends", "starts"])
def test_cu_seqlens_reproduce_the_host_paths_mask_and_positions(short_documents, eos_grouping):
    """The dataset's own intra-document mask and reset position ids vs the mask rebuilt from cu_seqlens; with
    either EOS grouping, since it changes the router's segments (checked against a slicing loop) and not
    attention."""
    from emo_plugin.data.dataset import build_emo_gpt_datasets
    from emo_plugin.data.tokenizer import EmoTokenizer
    from emo_plugin.training.data import get_micro_batch
    from tests.moe.test_routing_ids import segments_by_slicing
    from tests.training.conftest import REPO

    tokenizer = EmoTokenizer(str(REPO / "examples/data/tokenizer.model"))
    train, _, _ = build_emo_gpt_datasets(
        tokenizer, [short_documents], 128, [16, None, None], split="100,0,0", seed=5,
        reset_attention_mask=True, reset_position_ids=True, eod_mask_loss=False, create_attention_mask=True,
    )
    indices = [3, 4, 5, 6]
    grouping = dict(eod_token_id=tokenizer.eod, eos_grouping=eos_grouping)
    host = get_micro_batch(train, indices, seed=5, max_docs=256, device=torch.device("cpu"), **grouping)
    thd = get_micro_batch(
        train, indices, seed=5, max_docs=256, device=torch.device("cpu"), packing=ThdPacking(max_documents=256),
        **grouping,
    )
    b, s = host["tokens"].shape
    assert "attention_mask" not in thd
    params = thd["packed_seq_params"]
    assert params.qkv_format == "thd" and params.max_seqlen_q == params.max_seqlen_kv
    cu = params.cu_seqlens_q
    assert len(cu) - 1 > 2 * b, "the sample should hold several documents per row"
    # host mask: block-diagonal over rows, each block the dataset's [s, s] mask
    host_mask = torch.ones(b * s, b * s, dtype=torch.bool)
    for row in range(b):
        host_mask[row * s : (row + 1) * s, row * s : (row + 1) * s] = host["attention_mask"][row, 0]
    assert torch.equal(dense_mask(cu), host_mask)
    assert torch.equal(thd["position_ids"][0], host["position_ids"].reshape(-1))
    assert params.max_seqlen_q == int((cu[1:] - cu[:-1]).max())
    rows = [segments_by_slicing(row, eos_grouping, tokenizer.eod) for row in host["tokens"].tolist()]
    assert split_routing_ids(host["routing_ids"])[0].tolist() == rows
    offsets = [sum(max(row) for row in rows[:r]) for r in range(b)]  # the thd row numbers segments across rows
    expected = [offset + segment for offset, row in zip(offsets, rows) for segment in row]
    assert split_routing_ids(thd["routing_ids"][0])[0].tolist() == expected


def _reference_zigzag(cu_seqlens: torch.Tensor, cp: int, rank: int) -> torch.Tensor:
    """TE's thd_get_partitioned_indices, one sequence at a time."""
    index = []
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        chunk = (end - start) // (2 * cp)
        index += range(start + rank * chunk, start + (rank + 1) * chunk)
        index += range(start + (2 * cp - 1 - rank) * chunk, start + (2 * cp - rank) * chunk)
    return torch.tensor(index, dtype=torch.long)


@pytest.mark.parametrize("cp", [2, 4])
def test_context_parallel_padding_and_zigzag(cp):
    b, s = 2, 48
    batch = _synthetic_batch(b, s, seed=cp)
    full, cu, max_seqlen = packed_layout(batch, ThdPacking(max_documents=MAX_DOCS, context_parallel_size=cp))
    lengths = cu[1:] - cu[:-1]
    assert bool((lengths % (2 * cp) == 0).all())
    assert max_seqlen == int(lengths.max())
    runs = _row_runs(batch["doc_ids"])
    # each document keeps its tokens in order at the start of its padded span; the padding is inert
    real = torch.zeros(int(cu[-1]), dtype=torch.bool)
    starts = cu[:-1].long()
    for start, run in zip(starts.tolist(), runs.tolist()):
        real[start : start + run] = True
    assert torch.equal(full["tokens"][0][real], batch["tokens"].reshape(-1))
    assert torch.equal(full["loss_mask"][0][~real], torch.zeros(int((~real).sum())))
    assert bool((full["routing_ids"][0][~real] == 0).all())
    assert torch.equal(full["position_ids"][0][real], torch.cat([torch.arange(r) for r in runs.tolist()]))
    # per-rank shares: TE's zigzag, together covering every position exactly once
    shares = []
    for rank in range(cp):
        index = cp_partition_index(cu, cp, rank)
        assert torch.equal(index, _reference_zigzag(cu, cp, rank))
        local, local_cu, _ = pack_micro_batch(
            batch, ThdPacking(max_documents=MAX_DOCS, context_parallel_size=cp, context_parallel_rank=rank)
        )
        assert torch.equal(local_cu, cu.to(torch.int32))  # every rank gets the full row's cu_seqlens (as TE expects)
        assert torch.equal(local["tokens"][0], full["tokens"][0][index])
        assert torch.equal(local["routing_ids"][0], full["routing_ids"][0][index])
        shares.append(index)
    assert torch.equal(torch.sort(torch.cat(shares)).values, torch.arange(int(cu[-1])))


def test_fixed_length_for_pipeline_parallelism():
    packing = ThdPacking(max_documents=MAX_DOCS, context_parallel_size=2, length_multiple=4)
    b, s = 2, 40
    bound = packing.fixed_length_bound(b, s)
    fixed = ThdPacking(max_documents=MAX_DOCS, context_parallel_size=2, length_multiple=4, fixed_length=bound)
    for seed in range(3):
        batch = _synthetic_batch(b, s, seed=seed)
        free, cu_free, _ = pack_micro_batch(batch, packing)
        packed, cu, _ = pack_micro_batch(batch, fixed)
        assert packed["tokens"].shape == (1, bound // 2)
        assert int(cu[-1]) == bound
        # the documents are laid out as without the bound; one filler sequence takes the rest
        assert torch.equal(cu[: len(cu_free)], cu_free) and len(cu) == len(cu_free) + 1
    with pytest.raises(DataError, match="more than the fixed pipeline length"):
        pack_micro_batch(_synthetic_batch(b, s, seed=0), ThdPacking(max_documents=MAX_DOCS, fixed_length=b * s - 8))


def test_attention_over_cu_seqlens_equals_thedense_mask():
    """Varlen attention (what TE computes from cu_seqlens) = dense-mask attention over the packed row."""
    batch = _synthetic_batch(2, 32, seed=11)
    _, cu, _ = pack_micro_batch(batch, ThdPacking(max_documents=MAX_DOCS))
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, int(cu[-1]), 8, generator=generator, dtype=torch.float64) for _ in range(3))
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~dense_mask(cu))
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(q[:, a:e], k[:, a:e], v[:, a:e], is_causal=True)
        for a, e in zip(cu[:-1].tolist(), cu[1:].tolist())
    ]
    torch.testing.assert_close(torch.cat(pieces, dim=1), dense, rtol=1e-12, atol=1e-12)


def test_packed_seq_params_fields():
    cu = torch.tensor([0, 4, 12], dtype=torch.int32)
    params = packed_seq_params(cu, 8)
    assert params.qkv_format == "thd" and params.pad_between_seqs is False
    assert params.cu_seqlens_q is cu and params.cu_seqlens_kv_padded is cu
    assert (params.max_seqlen_q, params.max_seqlen_kv) == (8, 8)
    assert params.tokens_per_sample is None  # else Megatron would unflatten the row before the MoE layer


@pytest.mark.usefixtures("megatron_single_rank")
@pytest.mark.parametrize("cp_padding", [1, 2])
def test_packed_row_trains_like_the_dense_mask_batch(cp_padding):
    """The whole GPTModel (RoPE over cu_seqlens, EMO routing of the renumbered packed row, MoE, loss) on the thd
    row equals the host path's dense-mask batch: per-token losses and every gradient. ``cp_padding=2`` uses the
    context-parallel layout (documents padded to a multiple of 4) without the split."""
    from emo_plugin.model.build import build_emo_gpt_model
    from emo_plugin.training.host_backend import forward, lm_loss
    from tests.helpers import tiny_config

    b, s, vocab = 3, 24, 64
    torch.manual_seed(0)
    model = build_emo_gpt_model(tiny_config(num_layers=2, emo={"max_documents_per_sequence": 32}), vocab_size=vocab,
                                max_sequence_length=s, use_transformer_engine=False, host_execution=True)
    with_thd_reference_attention(model)
    batch = _synthetic_batch(b, s, seed=21)
    batch["tokens"] %= vocab
    batch["labels"] %= vocab
    doc_ids = batch["doc_ids"]
    batch["attention_mask"] = ~((doc_ids[:, :, None] == doc_ids[:, None, :]) & torch.ones(s, s).bool().tril())[:, None]

    def loss_and_grads(micro_batch):
        model.zero_grad(set_to_none=True)
        per_token = forward(model, micro_batch)
        lm_loss(per_token, micro_batch["loss_mask"]).backward()
        return per_token.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    dense_loss, dense_grads = loss_and_grads(batch)
    packing = ThdPacking(max_documents=32, context_parallel_size=cp_padding)
    packed, cu, max_seqlen = packed_layout(dict(batch), packing)
    packed["packed_seq_params"] = packed_seq_params(cu.to(torch.int32), max_seqlen)
    thd_loss, thd_grads = loss_and_grads(packed)
    real = packed["loss_mask"][0] > 0
    torch.testing.assert_close(thd_loss[0][real], dense_loss.reshape(-1), rtol=1e-5, atol=1e-5)
    assert dense_grads.keys() == thd_grads.keys()
    for name, grad in dense_grads.items():
        torch.testing.assert_close(thd_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_gpu_intra_document_attention_without_te_attention_is_refused():
    from emo_plugin.cli.pretrain import parse_config
    from emo_plugin.errors import ConfigError
    from emo_plugin.run.config_file import DEFAULT_CONFIG
    from tests.helpers import checked

    cfg = parse_config(["--config", str(DEFAULT_CONFIG), "--parallel.device=cuda", "--model.transformer_impl=local",
                        "--data.intra_document_attention=true"])
    with pytest.raises(ConfigError, match=r"data.intra_document_attention=True: expected false with "
                                          r"model.transformer_impl=local \(thd packed sequences"):
        checked(cfg)
