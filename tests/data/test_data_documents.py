"""doc_ids_from_tokens / doc_ids_from_segment_lengths on hand-checked examples."""

import torch

from emo_plugin.data.documents import doc_ids_from_segment_lengths, doc_ids_from_tokens
from tests.data.helpers import reference_doc_ids

EOD, PAD = 2, 0


def test_eod_belongs_to_the_document_it_ends() -> None:
    tokens = torch.tensor([5, 6, EOD, 7, EOD, EOD, 8])
    assert doc_ids_from_tokens(tokens, EOD).tolist() == [1, 1, 1, 2, 2, 3, 4]


def test_batched_tokens_are_numbered_per_row() -> None:
    tokens = torch.tensor([[EOD, 5, 6, 7], [5, 6, 7, 8], [5, EOD, 6, EOD]])
    assert doc_ids_from_tokens(tokens, EOD).tolist() == [[1, 2, 2, 2], [1, 1, 1, 1], [1, 1, 2, 2]]
    assert doc_ids_from_tokens(tokens, EOD).dtype == torch.int64


def test_padding_gets_id_zero() -> None:
    tokens = torch.tensor([5, EOD, 6, PAD, PAD])
    assert doc_ids_from_tokens(tokens, EOD, pad_id=PAD).tolist() == [1, 1, 2, 0, 0]


def test_matches_plain_loop_on_random_tokens() -> None:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, 6, (8, 97), generator=generator)  # EOD = 2 is frequent
    expected = [reference_doc_ids(row, EOD) for row in tokens.tolist()]
    assert doc_ids_from_tokens(tokens, EOD).tolist() == expected


def test_segment_lengths_are_numbered_then_padded_or_cut() -> None:
    assert doc_ids_from_segment_lengths([2, 3, 1], 8).tolist() == [1, 1, 2, 2, 2, 3, 0, 0]
    assert doc_ids_from_segment_lengths([2, 3, 4], 6).tolist() == [1, 1, 2, 2, 2, 3]
