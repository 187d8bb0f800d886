"""The clustering score and pool overlap separate modular from non-modular routing on constructed models.

Modular: attention and expert outputs are zeroed, so every layer's router sees the token embedding; tokens of
domain A carry a strong direction that the gate rows of experts 0-3 point at, domain B one for experts 4-7.
Non-modular: a random router, and both "domains" drawn from the same tokens, so usage carries no label.
"""

import numpy as np
import torch

from emo_plugin.evaluation.analysis.batching import document_batches
from emo_plugin.evaluation.analysis.document_clustering import clustering_scores
from emo_plugin.evaluation.analysis.modularity_summary import document_usage_vectors, modularity_summary
from emo_plugin.evaluation.analysis.routing_recorder import record_document_routing
from tests.evaluation.analysis.tiny_checkpoint import tiny_emo_model

VOCAB = 64
DOMAIN_TOKENS = (range(3, 33), range(33, 64))


def domain_specific_model():
    model = tiny_emo_model(VOCAB, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings.copy_(0.1 * torch.randn(embeddings.shape, generator=generator))
        for domain, tokens in enumerate(DOMAIN_TOKENS):
            embeddings[list(tokens), domain] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            for expert in layer.mlp.experts:
                expert.down_proj.weight.zero_()
            gate = layer.mlp.gate.weight
            gate.copy_(0.1 * torch.randn(gate.shape, generator=generator))
            gate[:4, 0], gate[:4, 1] = 5.0, -5.0
            gate[4:8, 0], gate[4:8, 1] = -5.0, 5.0
    return model


def documents(token_sets, docs_per_domain=12, length=24, seed=2):
    generator = torch.Generator().manual_seed(seed)
    docs, labels = [], []
    for label, tokens in enumerate(token_sets):
        tokens = torch.tensor(list(tokens))
        for _ in range(docs_per_domain):
            picks = tokens[torch.randint(len(tokens), (length,), generator=generator)]
            docs.append(picks.tolist())  # no eos: its embedding belongs to neither domain
            labels.append(label)
    return docs, np.array(labels)


def record(model, docs):
    return record_document_routing(model, docs, document_batches(docs, 8, pad_id=0))


def test_domain_specific_routing_clusters_perfectly():
    docs, labels = documents(DOMAIN_TOKENS)
    routing = record(domain_specific_model(), docs)
    for layer in range(routing.num_layers):
        usage = routing.slot_counts[layer]
        assert usage[labels == 0][:, 4:].sum() == 0 and usage[labels == 1][:, :4].sum() == 0
    summary = modularity_summary(routing, labels, ["a", "b"], pool_size=4)
    assert summary["mean"]["clustering_nmi"] == 1.0 and summary["mean"]["clustering_ari"] == 1.0
    assert summary["mean"]["pool_overlap_within"] > 0.9 > summary["mean"]["pool_overlap_between"] + 0.8
    assert summary["mean"]["top_25%_share"] > 0.5  # 2 of a domain's 4 experts carry most of its slots


def test_random_routing_does_not_cluster_by_label():
    all_tokens = range(3, VOCAB)
    docs, labels = documents((all_tokens, all_tokens), docs_per_domain=20)
    routing = record(tiny_emo_model(VOCAB, seed=3), docs)
    for layer in range(routing.num_layers):
        scores = clustering_scores(document_usage_vectors(routing, layer), labels)
        assert scores["clustering_nmi"] < 0.2 and scores["clustering_ari"] < 0.2, scores
