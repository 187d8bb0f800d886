"""``EmoGPTDataset``: Megatron's GPTDataset whose samples also carry per-token document ids.

EMO routers pick an expert pool per document, so every sample needs ``doc_ids`` (int64
``[sequence_length]``, see ``documents.py`` for the convention). Megatron already knows where
each sample's document segments lie (``megatron_compat.document_sample`` returns their
lengths) but drops that information; this subclass turns it into ``doc_ids`` and cross-checks
it against the EOD tokens, which is what Megatron's own masks (``reset_attention_mask``,
``reset_position_ids``, ``eod_mask_loss``) are built from. If the two views disagree the data is
not what EMO training assumes, and the sample is refused rather than silently mis-routed.

Everything else (splits, blending, sample-index caching, padding) is Megatron's, reached through
``build_emo_gpt_datasets`` and ``BlendedMegatronDatasetBuilder``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset

from emo_plugin.data.dataset_meta import DatasetMeta, token_dtype_for
from emo_plugin.data.documents import doc_ids_from_segment_lengths, doc_ids_from_tokens
from emo_plugin.data.integrity import check_dataset
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.errors import DataError
from emo_plugin.megatron_compat import document_sample


def check_prefix(prefix: str, tokenizer) -> tuple[DatasetMeta, str]:
    """The sidecar of ``prefix`` after checking it against ``tokenizer`` and the files; and their fingerprint."""
    if not isinstance(tokenizer, EmoTokenizer):
        raise DataError(
            f"GPTDatasetConfig.tokenizer must be an emo_plugin.data.EmoTokenizer (needed to check "
            f"{prefix}'s tokenizer sidecar), got {type(tokenizer).__name__}"
        )
    meta = DatasetMeta.read(prefix)
    meta.check_tokenizer(tokenizer, prefix)
    return meta, check_dataset(prefix, meta)


class EmoGPTDataset(GPTDataset):
    """GPTDataset + ``doc_ids``; refuses datasets whose sidecar names a different tokenizer.

    ``doc_ids[t]`` is the 1-based index of the document segment that token ``t`` of
    ``tokens`` belongs to (0 = padding). With ``add_extra_token_to_sequence`` the sample's
    text has ``sequence_length + 1`` tokens and ``tokens = text[:-1]``, so ``doc_ids`` covers
    ``text[:-1]`` too. The batch-padding sample (``idx=None``) gets all-zero ``doc_ids``.
    """

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: GPTDatasetConfig) -> IndexedDataset:
        """Open ``dataset_path`` after checking its sidecar against ``config.tokenizer``."""
        tokenizer = config.tokenizer
        meta = check_prefix(dataset_path, tokenizer)[0]
        indexed = GPTDataset.build_low_level_dataset(dataset_path, config)
        expected = numpy.dtype(token_dtype_for(meta.vocab_size))
        if numpy.dtype(indexed.index.dtype) != expected:
            raise DataError(
                f"{dataset_path}.idx: token dtype {numpy.dtype(indexed.index.dtype).name} does not match "
                f"vocab_size {meta.vocab_size} recorded in the sidecar (expected {expected.name}); "
                "re-run tools/preprocess_data.py"
            )
        return indexed

    def __getitem__(self, idx: int | None) -> dict[str, torch.Tensor]:
        sample = super().__getitem__(idx)
        if idx is None:
            sample["doc_ids"] = torch.zeros(self.config.sequence_length, dtype=torch.int64)
            return sample
        text, segment_lengths = document_sample(self, idx)
        text_doc_ids = doc_ids_from_segment_lengths(segment_lengths, text.size)
        self._check_segments_match_eod(idx, torch.from_numpy(text), text_doc_ids, sum(segment_lengths))
        sample["doc_ids"] = text_doc_ids[: self.config.sequence_length].contiguous()
        return sample

    def _check_segments_match_eod(
        self, idx: int, text: torch.Tensor, text_doc_ids: torch.Tensor, num_real_tokens: int
    ) -> None:
        """Refuse a sample whose index-derived segments do not end exactly at its EOD tokens."""
        from_eod = doc_ids_from_tokens(text[:num_real_tokens], self.config.tokenizer.eod)
        mismatch = (from_eod != text_doc_ids[:num_real_tokens]).nonzero()
        if mismatch.numel():
            raise DataError(
                f"{self.dataset_path}: sample {idx}: document segments from the index disagree with "
                f"EOD positions (first at token {int(mismatch[0])}); every document must end with exactly "
                f"one EOD (id {self.config.tokenizer.eod}) - make the dataset with tools/preprocess_data.py"
            )


def build_emo_gpt_datasets(
    tokenizer: EmoTokenizer,
    data_prefixes: Sequence[str],
    sequence_length: int,
    num_samples: Sequence[int | None],
    weights: Sequence[float] | None = None,
    split: str = "969,30,1",
    seed: int = 1234,
    path_to_cache: str | None = None,
    reset_attention_mask: bool = False,
    reset_position_ids: bool = False,
    eod_mask_loss: bool = False,
    blend_per_split: Sequence[tuple[list[str], list[float] | None] | None] | None = None,
    **config_overrides: Any,
) -> list[EmoGPTDataset | BlendedDataset | None]:
    """Build the (train, valid, test) datasets over a blend of preprocessed prefixes.

    ``blend_per_split`` (Megatron-LM's ``--train-data-path`` / ``--valid-data-path`` / ``--test-data-path``)
    replaces ``data_prefixes``, ``weights`` and ``split``: one (prefixes, weights) blend per split, or ``None``.

    ``num_samples`` gives the sample count per split (``None`` = one epoch; requires
    ``weights=None``); ``split`` carves each prefix into train/valid/test by document.
    ``reset_attention_mask`` blocks attention across documents in the returned ``[1, s, s]``
    bool ``attention_mask`` (True = masked); ``reset_position_ids`` restarts positions per
    document. ``config_overrides`` go to ``GPTDatasetConfig`` (e.g. ``create_attention_mask``).
    Builds on every rank; with torch.distributed initialized, rank 0 builds the index caches first.

    Every prefix is checked against its sidecar first (``integrity.py``). The index cache goes to
    ``<first prefix's folder>/cache/<content fingerprint>`` unless ``path_to_cache`` is given, so a dataset
    re-made under the same prefix never reuses the indices of the old one.
    """
    per_split_prefixes = [p for blend in blend_per_split or () if blend for p in blend[0]]
    fingerprints, documents = [], []
    for prefix in [*data_prefixes, *per_split_prefixes]:
        meta, content = check_prefix(prefix, tokenizer)
        fingerprints.append(content)
        documents.append(meta.num_documents)
    if path_to_cache is None and fingerprints:
        combined = hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:16]
        path_to_cache = str(Path([*data_prefixes, *per_split_prefixes][0]).parent / "cache" / f"emo-{combined}")
    blend = None if blend_per_split else (list(data_prefixes), None if weights is None else list(weights))
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=sequence_length,
        blend=blend,
        blend_per_split=None if blend is not None else [b and (list(b[0]), b[1]) for b in blend_per_split],
        split=None if blend is None else split,
        tokenizer=tokenizer,
        path_to_cache=path_to_cache,
        reset_attention_mask=reset_attention_mask,
        reset_position_ids=reset_position_ids,
        eod_mask_loss=eod_mask_loss,
        **config_overrides,
    )
    if blend is not None:
        _check_splits_have_documents(data_prefixes, documents, config.split_matrix, split)
    return BlendedMegatronDatasetBuilder(EmoGPTDataset, list(num_samples), lambda: True, config).build()


def _check_splits_have_documents(prefixes, documents, split_matrix, split: str) -> None:
    """Refuse a requested split that gets no document of a prefix: Megatron's epoch count loops forever on it."""
    hint = {"validation": ", or skip validation: data.split='100,0,0' with eval.iters=0",
            "test": ", or give the test split weight 0"}
    for prefix, count in zip(prefixes, documents):
        for name, bookends in zip(("train", "validation", "test"), split_matrix):
            if bookends is None:  # weight 0: Megatron builds no dataset for this split
                continue
            begin, end = (int(round(b * float(count))) for b in bookends)  # Megatron's rounding
            if end <= begin:
                raise DataError(
                    f"{prefix}: data.split={split!r} gives the {name} split {end - begin} of its {count} documents "
                    f"(share {bookends[1] - bookends[0]:.3g}); add documents, raise that split's weight "
                    f"(e.g. data.split='80,20,0'){hint.get(name, '')}"
                )
