"""A labelled corpus, tokenized: the token ids of each document and the index of its domain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_plugin.errors import AnalysisError
from emo_plugin.evaluation.analysis.corpus import LabelledDocument, group_by_domain
from emo_plugin.evaluation.analysis.text_encoding import TextEncoder, encode_documents


@dataclass
class TokenizedCorpus:
    documents: list[list[int]]
    domain_ids: np.ndarray  # [N] index into domain_names
    domain_names: list[str]

    def domain_stats(self) -> dict:
        """{domain: {"documents": n, "tokens": n}} for the reports."""
        stats = {}
        for k, name in enumerate(self.domain_names):
            chosen = [doc for doc, domain in zip(self.documents, self.domain_ids) if domain == k]
            stats[name] = {"documents": len(chosen), "tokens": sum(map(len, chosen))}
        return stats


def tokenize_by_domain(
    corpus: list[LabelledDocument],
    encode: TextEncoder,
    eos_token_id: int,
    vocab_size: int,
    max_doc_tokens: int,
    max_tokens_per_domain: int | None,
) -> TokenizedCorpus:
    """Each domain's documents in corpus order until its token budget is spent; domains sorted by name."""
    documents, domain_ids, domain_names = [], [], []
    for name, domain_documents in group_by_domain(corpus).items():
        encoded = encode_documents(
            [d.text for d in domain_documents], encode, eos_token_id, vocab_size, max_doc_tokens, max_tokens_per_domain
        )
        if not encoded:
            raise AnalysisError(f"domain {name!r}: no document with any token after tokenization")
        domain_ids += [len(domain_names)] * len(encoded)
        documents += encoded
        domain_names.append(name)
    return TokenizedCorpus(documents, np.asarray(domain_ids, dtype=np.int64), domain_names)
