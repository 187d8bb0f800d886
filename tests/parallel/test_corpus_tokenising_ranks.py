"""First-use tokenisation of data.corpus on 2 ranks: rank 0 tokenises, rank 1 waits and hears its outcome.

A failure on rank 0 must reach rank 1 as the same error at once (not a barrier timeout half an hour later).
"""

from __future__ import annotations

from pathlib import Path

from emo_plugin.errors import DataError
from emo_plugin.run.config import TrainingConfig
from tests.data.helpers import BUNDLED_TOKENIZER, write_jsonl
from tests.parallel.harness import run_ranks


def prepare_on_rank(corpus: str, cache_dir: str, layout=None):
    """Module-level worker: ``prepare_prefixes`` as the trainer calls it; returns prefixes or the error text."""
    from emo_plugin.training.data import prepare_prefixes

    cfg = TrainingConfig()
    cfg.data.corpus, cfg.data.tokenizer_model, cfg.data.cache_dir = corpus, str(BUNDLED_TOKENIZER), cache_dir
    try:
        return prepare_prefixes(cfg)[0]
    except DataError as error:
        return f"DataError: {error}"


def test_ranks_share_one_tokenisation_and_its_error(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": f"document {i}"} for i in range(20)])
    results = run_ranks(prepare_on_rank, 2, corpus=str(good), cache_dir=str(tmp_path / "cache"))
    assert results[0] == results[1] and len(results[0]) == 1
    assert Path(f"{results[0][0]}.idx").is_file()

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "one"}, {"text": " "}])
    results = run_ranks(prepare_on_rank, 2, timeout=60, corpus=str(bad), cache_dir=str(tmp_path / "cache"))
    assert results[0] == results[1]
    assert results[0].startswith("DataError: data.corpus: ") and "bad.jsonl:2: empty document" in results[0]
