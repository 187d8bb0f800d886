"""EmoGPTDataset: doc_ids agree with an independent recomputation, masks block cross-document attention."""

import dataclasses
from pathlib import Path

import numpy
import pytest
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from emo_plugin.data.dataset import EmoGPTDataset, build_emo_gpt_datasets
from emo_plugin.data.dataset_meta import DatasetMeta
from emo_plugin.data.documents import doc_ids_from_tokens
from emo_plugin.data.preprocess import preprocess_jsonl
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from tests.data.helpers import reference_doc_ids, write_jsonl

SEQUENCE_LENGTH = 96


def _check_sample(sample: dict[str, torch.Tensor], eod_id: int) -> None:
    """doc_ids must equal a plain-loop recomputation from the sample's own tokens (0 on padding)."""
    tokens, doc_ids = sample["tokens"], sample["doc_ids"]
    assert doc_ids.dtype == torch.int64 and doc_ids.shape == (SEQUENCE_LENGTH,)
    real = int((doc_ids > 0).sum())
    assert (doc_ids[real:] == 0).all(), "padding only at the end"
    assert doc_ids[:real].tolist() == reference_doc_ids(tokens[:real].tolist(), eod_id)
    assert real == SEQUENCE_LENGTH or sample["loss_mask"][real:].eq(0).all()


def test_doc_ids_match_eod_positions_across_many_samples(
    subset_prefix: str, bundled_tokenizer: EmoTokenizer, tmp_path: Path
) -> None:
    train, valid, _ = build_emo_gpt_datasets(
        bundled_tokenizer, [subset_prefix], SEQUENCE_LENGTH, [400, None, None], split="80,20,0",
        path_to_cache=str(tmp_path), drop_last_partial_validation_sequence=False,
    )
    assert isinstance(train, EmoGPTDataset)
    multi_document_samples = padded_samples = 0
    for dataset in (train, valid):
        for index in range(len(dataset)):
            sample = dataset[index]
            _check_sample(sample, bundled_tokenizer.eod_id)
            multi_document_samples += int(sample["doc_ids"].max() > 1)
            padded_samples += int((sample["doc_ids"] == 0).any())
    assert multi_document_samples > 50
    assert padded_samples == 1, "only the partial last validation sample is padded"


def test_doc_ids_agree_with_megatron_position_resets_and_batched_recomputation(
    subset_prefix: str, bundled_tokenizer: EmoTokenizer, tmp_path: Path
) -> None:
    (train, _, _) = build_emo_gpt_datasets(
        bundled_tokenizer, [subset_prefix], SEQUENCE_LENGTH, [64, None, None], split="100,0,0",
        path_to_cache=str(tmp_path), reset_position_ids=True, create_attention_mask=False,
    )
    batch = torch.utils.data.default_collate([train[i] for i in range(64)])
    assert "attention_mask" not in batch
    starts = torch.ones_like(batch["doc_ids"], dtype=torch.bool)
    starts[:, 1:] = batch["doc_ids"][:, 1:] != batch["doc_ids"][:, :-1]
    assert torch.equal(starts, batch["position_ids"] == 0)
    assert torch.equal(doc_ids_from_tokens(batch["tokens"], bundled_tokenizer.eod_id), batch["doc_ids"])


@pytest.mark.parametrize("reset_attention_mask", [True, False])
def test_attention_mask_blocks_cross_document_attention_when_enabled(
    subset_prefix: str, bundled_tokenizer: EmoTokenizer, tmp_path: Path, reset_attention_mask: bool
) -> None:
    (train, _, _) = build_emo_gpt_datasets(
        bundled_tokenizer, [subset_prefix], SEQUENCE_LENGTH, [32, None, None], split="100,0,0",
        path_to_cache=str(tmp_path), reset_attention_mask=reset_attention_mask,
    )
    causal = torch.tril(torch.ones(SEQUENCE_LENGTH, SEQUENCE_LENGTH, dtype=torch.bool))
    for index in range(32):
        sample = train[index]
        doc_ids = sample["doc_ids"]
        same_document = doc_ids[:, None] == doc_ids[None, :]
        allowed = causal & same_document if reset_attention_mask else causal
        assert sample["attention_mask"].shape == (1, SEQUENCE_LENGTH, SEQUENCE_LENGTH)
        assert torch.equal(sample["attention_mask"][0], ~allowed), "True means masked"


def test_blend_of_two_datasets(tmp_path: Path, corpus_records: list[dict], bundled_tokenizer: EmoTokenizer) -> None:
    prefixes = []
    for name, records in (("code", [r for r in corpus_records if r["domain"] in ("python", "c_headers")]),
                          ("prose", [r for r in corpus_records if r["domain"].startswith("man_")])):
        source = write_jsonl(tmp_path / f"{name}.jsonl", records)
        preprocess_jsonl([source], bundled_tokenizer.model_path, tmp_path / name, progress=False)
        prefixes.append(str(tmp_path / name))
    train, _, _ = build_emo_gpt_datasets(
        bundled_tokenizer, prefixes, SEQUENCE_LENGTH, [200, 0, 0], weights=[0.7, 0.3],
        split="100,0,0", path_to_cache=str(tmp_path / "cache"),
    )
    assert isinstance(train, BlendedDataset) and len(train) == 200
    dataset_ids = [int(train[i]["dataset_id"]) for i in range(200)]
    assert 0.6 < dataset_ids.count(0) / 200 < 0.8
    for index in range(200):
        _check_sample(train[index], bundled_tokenizer.eod_id)


def test_batch_padding_sample_has_zero_doc_ids(
    subset_prefix: str, bundled_tokenizer: EmoTokenizer, tmp_path: Path
) -> None:
    (train, _, _) = build_emo_gpt_datasets(
        bundled_tokenizer, [subset_prefix], SEQUENCE_LENGTH, [8, None, None], split="100,0,0",
        path_to_cache=str(tmp_path),
    )
    sample = train[None]
    assert (sample["doc_ids"] == 0).all() and (sample["loss_mask"] == 0).all()


def test_documents_without_eod_are_refused(tmp_path: Path, subset_prefix: str, bundled_tokenizer: EmoTokenizer) -> None:
    """A dataset whose documents do not end in EOD (not made by preprocess_data) fails loudly."""
    prefix = tmp_path / "no_eod"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=numpy.uint16)
    tokens = 0
    for text in ("first document " * 20, "second document " * 20, "third document " * 20):
        ids = numpy.array(bundled_tokenizer.encode(text))
        builder.add_document(ids, [ids.size])
        tokens += ids.size
    builder.finalize(f"{prefix}.idx")
    # A sidecar that agrees with the files (sizes), so only the missing EODs are wrong.
    dataclasses.replace(DatasetMeta.read(subset_prefix), num_documents=3, num_tokens=tokens).write(prefix)
    (train, _, _) = build_emo_gpt_datasets(
        bundled_tokenizer, [str(prefix)], 32, [4, None, None], split="100,0,0", path_to_cache=str(tmp_path),
    )
    expected = r"no_eod: sample \d+: document segments from the index disagree with EOD positions"
    with pytest.raises(DataError, match=expected):
        for index in range(len(train)):
            train[index]


def test_tokenizer_must_be_an_emo_tokenizer(subset_prefix: str, tmp_path: Path) -> None:
    class OtherTokenizer:
        vocab_size, eod, pad, unique_identifiers = 4096, 2, 0, {"class": "OtherTokenizer"}

    with pytest.raises(DataError, match="GPTDatasetConfig.tokenizer must be an emo_plugin.data.EmoTokenizer"):
        build_emo_gpt_datasets(
            OtherTokenizer(), [subset_prefix], 32, [4, None, None], split="100,0,0", path_to_cache=str(tmp_path)
        )
