"""Routing ids: document segments from EOD tokens or batch ids, padding, salts."""

import pytest
import torch

from emo_plugin.errors import DataError
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
    """The micro-batch's one document-count check (the only host sync of EMO routing) names the bound to raise."""
    with pytest.raises(DataError) as info:
        build_routing_ids(tokens_BS=torch.zeros(1, 4, dtype=torch.long), eod_token_id=EOD, max_documents_per_sequence=2)
    assert str(info.value) == ("a sequence of this data holds 4 documents, more than emo.max_documents_per_sequence=2; "
                               "set --emo.max_documents_per_sequence=4 or more")


def test_one_generator_per_sequence_gives_each_sequence_its_own_salts():
    """With a generator per sequence a sequence's ids do not depend on the micro-batch it is built in."""
    tokens = torch.randint(0, 4, (3, 20), generator=torch.Generator().manual_seed(2))

    def generators(seeds):
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    batch = build_routing_ids(tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=20,
                              generator=generators([5, 6, 7]))
    for b, seed in enumerate([5, 6, 7]):
        alone = build_routing_ids(tokens_BS=tokens[b : b + 1], eod_token_id=EOD, max_documents_per_sequence=20,
                                  generator=generators([seed])[0])
        assert torch.equal(batch[b : b + 1], alone)
    with pytest.raises(ValueError, match="^build_routing_ids got 2 generators for 3 sequences$"):
        build_routing_ids(tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=20,
                          generator=generators([5, 6]))


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


def segments_by_slicing(row: list[int], eos_grouping: str, eod: int = EOD) -> list[int]:
    """Plain loop in the style of AI2's router: documents are slices between boundaries, an EOS boundary before
    the EOS token ("starts") or after it ("ends"); a slice of length 0 is skipped."""
    eos_at = [i for i, token in enumerate(row) if token == eod]
    bounds = [i + (eos_grouping == "ends") for i in eos_at] + [len(row)]
    segments, start, number = [0] * len(row), 0, 0
    for end in bounds:
        if end <= start:
            continue
        number += 1
        segments[start:end] = [number] * (end - start)
        start = end
    return segments


def test_three_documents_under_both_eos_groupings():
    """a a EOS | b EOS | c c EOS: 'ends' keeps each EOS with its document, 'starts' gives it to the next one and
    the final EOS (whose document is not in the sequence) becomes a segment of its own."""
    tokens = torch.tensor([[5, 5, EOD, 6, EOD, 7, 7, EOD]])
    ends = build_routing_ids(tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=4)
    starts = build_routing_ids(tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=4, eos_grouping="starts")
    assert split_routing_ids(ends)[0].tolist() == [[1, 1, 1, 2, 2, 3, 3, 3]]
    assert split_routing_ids(starts)[0].tolist() == [[1, 1, 2, 2, 3, 3, 3, 4]]


@pytest.mark.parametrize("eos_grouping", ["ends", "starts"])
def test_segments_match_the_slicing_loop(eos_grouping):
    """Random rows with EODs anywhere: first token, last token, several in a row (empty documents)."""
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(0, 4, (6, 30), generator=g)
    tokens[0, 0] = tokens[1, -1] = tokens[2, 10:13] = EOD
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=30,
                            eos_grouping=eos_grouping)
    segments = split_routing_ids(ids)[0]
    for row, row_segments in zip(tokens.tolist(), segments.tolist()):
        assert row_segments == segments_by_slicing(row, eos_grouping)


def test_starts_grouping_regroups_the_datasets_document_ids():
    """The dataset's doc_ids keep each EOD in the document it ends; 'starts' moves it to the next document, and
    an EOD right before padding stays alone."""
    tokens = torch.tensor([[5, EOD, 6, 6, EOD, 3, 3]])
    doc_ids = torch.tensor([[1, 1, 2, 2, 2, 0, 0]])
    ids = build_routing_ids(doc_ids_BS=doc_ids, tokens_BS=tokens, eod_token_id=EOD, max_documents_per_sequence=4,
                            eos_grouping="starts")
    assert split_routing_ids(ids)[0].tolist() == [[1, 2, 2, 2, 3, 0, 0]]


def test_starts_grouping_without_tokens_is_refused():
    with pytest.raises(ValueError, match="eos_grouping='starts' needs tokens_BS and eod_token_id"):
        build_routing_ids(doc_ids_BS=torch.ones(1, 4, dtype=torch.long), max_documents_per_sequence=2,
                          eos_grouping="starts")
    with pytest.raises(ValueError, match="eos_grouping='middle': expected one of ends, starts"):
        build_routing_ids(doc_ids_BS=torch.ones(1, 4, dtype=torch.long), max_documents_per_sequence=2,
                          eos_grouping="middle")
