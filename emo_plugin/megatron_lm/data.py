"""Megatron-LM's datasets provider for EMO: ``EmoGPTDataset`` samples that carry their routing ids.

The datasets are emo_plugin's (``data/dataset.py``: Megatron's GPTDataset plus per-token ``doc_ids``, checked
against each prefix's tokenizer sidecar), made from Megatron-LM's data flags (``--data-path`` blends,
``--split``, ``--train/valid/test-data-path``, ``--data-cache-path``, ``--reset-position-ids``, ...).
Each sample's routing ids are drawn in ``__getitem__`` — in the data loader's workers, off the training step —
from the run seed and the sample's index, exactly as ``emo-pretrain`` draws them (``training/data.py``), so
both loops route the same sample with the same pools and any rank, layout or resume draws the same.

Every rank builds its datasets and reads its own samples (``is_distributed``): pipeline stages without the
embedding still need every token's routing ids, and tensor-parallel ranks read the same samples instead of
waiting on a broadcast.
"""

from __future__ import annotations

import torch
from megatron.training import get_args, print_rank_0
from megatron.training.utils import get_blend_and_blend_per_split

from emo_plugin.data.dataset import build_emo_gpt_datasets
from emo_plugin.data.tokenizer import EmoTokenizer
from emo_plugin.model.record import ModelRecord
from emo_plugin.training.data import routing_ids_for


class RoutedSamples(torch.utils.data.Dataset):
    """A dataset's samples with ``routing_ids`` ([seq] int64, ``moe/routing_ids.py``) drawn from their index."""

    def __init__(self, dataset, *, seed: int, record: ModelRecord):
        self.dataset, self.seed, self.record = dataset, seed, record

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # Megatron's data loader reads the split (``index_split``) of the dataset
        return getattr(self.__dict__["dataset"], name)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        sample = self.dataset[idx]
        sample["routing_ids"] = routing_ids_for(
            sample["doc_ids"][None], [idx], self.seed, self.record.max_documents_per_sequence,
            tokens_BS=sample["tokens"][None], eod_token_id=self.record.eos_token_id,
            eos_grouping=self.record.eos_grouping,
        )[0]
        return sample


def train_valid_test_datasets_provider(train_val_test_num_samples, vp_stage=None):
    """``pretrain``'s datasets provider: (train, valid, test), each ``RoutedSamples`` or ``None``."""
    del vp_stage  # every stage reads the same samples
    args = get_args()
    record = ModelRecord.from_dict(args.emo_model, "args.emo_model")
    blend, blend_per_split = get_blend_and_blend_per_split(args)
    prefixes, weights = blend if blend else ([], None)
    intra = args.emo_intra_document_attention
    print_rank_0("> building EMO train, validation, and test datasets ...")
    datasets = build_emo_gpt_datasets(
        EmoTokenizer(args.tokenizer_model),
        prefixes,
        args.seq_length,
        list(train_val_test_num_samples),
        weights=weights,
        split=args.split,
        seed=args.seed,
        path_to_cache=args.data_cache_path,
        reset_attention_mask=args.reset_attention_mask or intra,
        reset_position_ids=args.reset_position_ids or intra,
        eod_mask_loss=args.eod_mask_loss,
        blend_per_split=blend_per_split,
        # THD packing replaces the dense [s, s] mask (forward_step.py)
        create_attention_mask=args.create_attention_mask_in_dataloader and not intra,
        mmap_bin_files=args.mmap_bin_files,
    )
    return [None if d is None else RoutedSamples(d, seed=args.seed, record=record) for d in datasets]


train_valid_test_datasets_provider.is_distributed = True
