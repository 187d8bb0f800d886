"""emo-pretrain on data that cannot work: a clear error in bounded time, with progress while tokenising."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.reliability import record
from tests.training.conftest import REPO, run_cli


def test_corpus_too_small_for_the_validation_split(tmp_path: Path) -> None:
    """Issue 12.1: 10 documents with split 98,2,0 used to loop forever inside Megatron's epoch computation."""
    lines = (REPO / "examples/data/corpus.jsonl").read_text(encoding="utf-8").splitlines()[:10]
    corpus = tmp_path / "ten.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--config", "tiny_cpu", f"--data.corpus={corpus}",
            f"--data.cache_dir={tmp_path}/cache", f"--checkpoint.save={tmp_path}/ckpt",
            f"--logging.tensorboard_dir={tmp_path}/tb", "--schedule.train_iters=2", "--schedule.lr_warmup_iters=1"]
    start = time.monotonic()
    proc = run_cli(args, timeout=400, check=False)  # generous: a shared CI core; the bug was an endless loop
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - start < 400
    err = proc.stderr
    assert "Traceback" not in err
    assert f"tokenising {corpus}" in err and "tokenised 10 documents" in err  # first use shows progress
    error = next(line for line in err.splitlines() if line.startswith("emo-pretrain: data error"))
    assert "gives the validation split 0 of its 10 documents" in error
    assert not (tmp_path / "ckpt").exists()
    assert [json.loads(line) for line in lines] == [json.loads(line) for line in corpus.read_text().splitlines()]
    progress = [line for line in err.splitlines() if line.startswith(("tokenising", "tokenised"))]
    assert "ten_" in err and "doc/s" in err  # the progress bar (tqdm) names the dataset and shows a rate
    record("emo-pretrain --data.corpus=<a corpus not tokenised yet>",
           seen=re.sub(r"\d+ workers", "<one per CPU> workers",  # the corpus key below hashes path and mtime
                       re.sub(r"_[0-9a-f]{12}_", "_<corpus key>_", " ... ".join(progress))) + ", with a progress bar",
           kept="the corpus, unchanged", area="data")
    record("emo-pretrain --data.corpus=<10 documents> (default split 98,2,0)",
           seen=re.sub(r"_[0-9a-f]{12}_", "_<corpus key>_", error),
           kept="the corpus; its tokenised copy in data.cache_dir (reused next time); no checkpoint folder",
           area="data")
