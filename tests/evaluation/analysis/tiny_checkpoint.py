"""A tiny random EMO checkpoint with a SentencePiece tokenizer and a small labelled corpus, for the analysis tests.

The tokenizer is the bundled `examples/data/tokenizer.model` when it exists, otherwise one trained on the test
corpus (a few seconds), so the tests never depend on a download.

The fixtures ``tiny_checkpoint`` and ``single_threaded_torch`` are defined here once and registered by the
conftest.py of the tests that use them: tests/evaluation/analysis (the analyses) and tests/cli (their commands).
One thread: the models are tiny, and on a shared CPU torch's thread pool is 10-100x slower than one thread.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from emo_plugin.hf import EmoConfig, EmoForCausalLM
from tests.helpers import tiny_hf_fields

ROOT = Path(__file__).resolve().parents[3]
BUNDLED_TOKENIZER = ROOT / "examples" / "data" / "tokenizer.model"
DOMAIN_WORDS = {
    "cooking": "flour butter oven simmer garlic onion pepper salt bake roast stir whisk dough sauce".split(),
    "code": "def return import class self lambda yield print range list dict tuple none true".split(),
    "law": "court plaintiff statute appeal judge verdict contract clause liability tort counsel".split(),
}


def write_labelled_corpus(path: Path, docs_per_domain: int = 8, words_per_doc: int = 40, seed: int = 0) -> Path:
    """Documents of random words from each domain's vocabulary, domains interleaved in the file."""
    rng = random.Random(seed)
    with path.open("w") as stream:
        for index in range(docs_per_domain):
            for domain, words in DOMAIN_WORDS.items():
                text = " ".join(rng.choice(words) for _ in range(words_per_doc))
                stream.write(json.dumps({"text": f"{domain} {index}: {text}", "domain": domain}) + "\n")
    return path


def tokenizer_model(tmp_dir: Path, corpus: Path) -> Path:
    if BUNDLED_TOKENIZER.is_file():
        return BUNDLED_TOKENIZER
    from emo_plugin.data.tokenizer import train_tokenizer

    return train_tokenizer([corpus], tmp_dir / "tokenizer", vocab_size=300, extra_fields=("domain",))


def tiny_emo_config(vocab_size: int, **overrides) -> EmoConfig:
    """The tiny shape (``tests/helpers.py``) with this corpus's vocabulary and 128 positions."""
    return EmoConfig(**tiny_hf_fields(**{"vocab_size": vocab_size, "max_position_embeddings": 128,
                                         "rope_theta": 10000.0, "eos_token_id": 2, "pad_token_id": 0, **overrides}))


def tiny_emo_model(vocab_size: int, seed: int = 0, **overrides) -> EmoForCausalLM:
    """Random model whose routers are sharp enough that routing depends on the token."""
    torch.manual_seed(seed)
    model = EmoForCausalLM(tiny_emo_config(vocab_size, **overrides)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(std=1.0)
    return model


def write_tiny_checkpoint(tmp_dir: Path) -> tuple[Path, Path, Path]:
    """(checkpoint dir, corpus file, tokenizer .model file)."""
    import sentencepiece

    corpus = write_labelled_corpus(tmp_dir / "corpus.jsonl")
    tokenizer = tokenizer_model(tmp_dir, corpus)
    vocab_size = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer)).vocab_size()
    checkpoint = tmp_dir / "checkpoint"
    tiny_emo_model(vocab_size).save_pretrained(checkpoint)
    return checkpoint, corpus, tokenizer


@pytest.fixture
def single_threaded_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint dir, labelled corpus, tokenizer .model) written once for all tests."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("analysis"))
