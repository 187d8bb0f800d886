"""Megatron-LM's data path for EMO (emo_plugin/megatron_lm/data.py, forward_step.py) gives each rank the micro-batch
emo-pretrain gives it: the same routing ids for the same sample index, the same packed THD row and CP share."""

from __future__ import annotations

import types

import torch
from torch.utils.data import default_collate

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.megatron_lm.data import RoutedSamples
from emo_plugin.model.sizes import SIZES
from emo_plugin.training.data import get_micro_batch, routing_ids_for
from tests.cuda_free.megatron_lm_runs import TOKENIZER
from tests.parallel.harness import Layout, run_ranks

SEED, SEQ = 1234, 128


def routed_train_split(prefix: str) -> RoutedSamples:
    train, _, _ = build_emo_gpt_datasets(EmoTokenizer(TOKENIZER), [prefix], SEQ, [64, 8, None], split="98,2,0",
                                         seed=SEED)
    return RoutedSamples(train, seed=SEED, record=SIZES["tiny"])


def test_samples_carry_emo_pretrains_routing_ids(corpus_prefix):
    samples = routed_train_split(corpus_prefix)
    indices = [5, 6, 7, 8, 40]
    batch = default_collate([samples[i] for i in indices])  # what Megatron-LM's data loader does
    expected = routing_ids_for(batch["doc_ids"], indices, SEED, SIZES["tiny"].max_documents_per_sequence,
                               tokens_BS=batch["tokens"], eod_token_id=2, eos_grouping="ends")
    assert torch.equal(batch["routing_ids"], expected) and batch["routing_ids"].gt(0).all()
    assert len(samples) == len(samples.dataset) and samples.index_split == samples.dataset.index_split


def _micro_batches(layout, prefix: str, packed: bool) -> list[dict]:
    """This rank's micro-batch of samples 0-3 both ways: Megatron-LM's forward step and emo-pretrain's trainer."""
    from emo_plugin.megatron_lm.forward_step import micro_batch_on_device
    from emo_plugin.training.megatron_backend import context_parallel_share
    from emo_plugin.training.packed_sequences import thd_packing
    from tests.cuda_free.cuda_shims import cuda_free

    samples = routed_train_split(prefix)
    config = types.SimpleNamespace(sequence_parallel=False, emo=types.SimpleNamespace(max_documents_per_sequence=64))
    with cuda_free():
        packing = thd_packing(config, micro_batch_size=4, seq_length=SEQ) if packed else None
        host = default_collate([samples[i] for i in range(4)])
        host["dataset_id"] = torch.zeros(4, dtype=torch.int64)  # a blended dataset's provenance field stays behind
        ours = micro_batch_on_device(host, packing)
        theirs = context_parallel_share(get_micro_batch(samples.dataset, list(range(4)), seed=SEED, max_docs=64,
                                                        device=torch.device("cuda", 0), packing=packing,
                                                        eod_token_id=2))
    params = [ours.pop("packed_seq_params", None), theirs.pop("packed_seq_params", None)]
    return [ours, theirs, params]


def test_each_context_parallel_rank_gets_emo_pretrains_share(corpus_prefix):
    for packed in (False, True):
        for ours, theirs, params in run_ranks(_micro_batches, 2, Layout(cp=2), prefix=corpus_prefix, packed=packed):
            assert sorted(ours) == sorted(theirs) and "dataset_id" not in ours
            for key in ours:
                assert torch.equal(ours[key], theirs[key]), key
            if packed:
                assert torch.equal(params[0].cu_seqlens_q, params[1].cu_seqlens_q)
                assert params[0].max_seqlen_q == params[1].max_seqlen_q
            else:
                assert ours["tokens"].shape == (4, SEQ // 2)  # the zigzag half of every sequence
