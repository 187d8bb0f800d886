"""Routing ids: document segments from EOD tokens or batch ids, padding, salts."""

import pytest
import torch

from emo_plugin.moe.routing_ids import build_routing_ids, segments_from_document_ids, split_routing_ids

EOD = 0


def test_segments_are_maximal_runs_and_padding_is_zero():
    doc_ids = torch.tensor([[9, 9, 4, 4, 9, 0, 0], [3, 3, 3, 3, 3, 3, 3]])
    assert segments_from_document_ids(doc_ids).tolist() == [[1, 1, 2, 2, 3, 0, 0], [1] * 7]


def test_build_routing_ids_matches_eod_positions_and_shares_salts_within_documents():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6, (4, 50), generator=g)
    padding = torch.zeros_like(tokens, dtype=torch.bool)
    padding[2, 40:] = True
    ids = build_routing_ids(
        tokens_BS=tokens, eod_token_id=EOD, padding_BS=padding, max_documents_per_sequence=50, generator=g
    )
    segments, salts = split_routing_ids(ids)
    for b in range(4):
        expected, doc = [], 1
        for s in range(50):
            expected.append(0 if padding[b, s] else doc)
            doc += int(tokens[b, s] == EOD)
        assert segments[b].tolist() == expected
        for seg in segments[b].unique().tolist():
            assert salts[b][segments[b] == seg].unique().numel() == 1
    assert (salts[segments > 0] > 0).all() and (ids[padding] == 0).all()


def test_batch_document_ids_take_precedence_over_tokens():
    ids = build_routing_ids(
        tokens_BS=torch.zeros(1, 4, dtype=torch.long), eod_token_id=EOD,
        doc_ids_BS=torch.tensor([[7, 7, 7, 7]]), max_documents_per_sequence=4,
    )
    assert split_routing_ids(ids)[0].tolist() == [[1, 1, 1, 1]]


def test_too_many_documents_is_a_clear_error():
    with pytest.raises(ValueError, match="max_documents_per_sequence=2"):
        build_routing_ids(tokens_BS=torch.zeros(1, 4, dtype=torch.long), eod_token_id=EOD, max_documents_per_sequence=2)


def test_every_document_of_a_batch_gets_its_own_salt():
    """Salts are 31-bit draws, one per (sequence, segment): 4×12 documents collide with probability ~1e-6, so
    every document must carry a distinct salt, and so must equal segment numbers in different sequences."""
    tokens = torch.ones(4, 48, dtype=torch.long)
    tokens[:, 3::4] = EOD  # 12 documents in every sequence
    ids = build_routing_ids(
        tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=12, generator=torch.Generator().manual_seed(1)
    )
    segments, salts = split_routing_ids(ids)
    salt_of = {(b, int(s)): int(salts[b][segments[b] == s].unique()) for b in range(4) for s in segments[b].unique()}
    assert len(salt_of) == 4 * 12
    assert len(set(salt_of.values())) == 4 * 12
    assert all(0 < salt < 2**31 for salt in salt_of.values())


def test_tokens_without_an_eod_id_are_refused():
    with pytest.raises(
        ValueError, match=r"^build_routing_ids needs doc_ids_BS, or tokens_BS together with eod_token_id$"
    ):
        build_routing_ids(tokens_BS=torch.ones(1, 4, dtype=torch.long), max_documents_per_sequence=2)


def test_empty_batch_gives_empty_ids():
    ids = build_routing_ids(doc_ids_BS=torch.zeros(2, 0, dtype=torch.long), max_documents_per_sequence=1)
    assert ids.shape == (2, 0)


def test_salts_come_from_the_given_generator_only():
    """The same seeded generator gives the same ids whatever the global RNG did in between."""
    tokens = torch.tensor([[1, 1, EOD, 1, 1, EOD, 1]])
    first = build_routing_ids(
        tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=4, generator=torch.Generator().manual_seed(3)
    )
    torch.rand(100)
    second = build_routing_ids(
        tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=4, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(first, second)
