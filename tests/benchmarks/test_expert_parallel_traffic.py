"""The EP traffic benchmark end to end on a random tiny checkpoint: its figures agree with the routing it measures."""

import dataclasses
import json

import pytest

from tests.benchmarks.expert_parallel_traffic import main, packed_sequences
from tests.convert.checkpoint_workers import TINY, random_model

TOKENIZER = "examples/data/tokenizer.model"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, megatron_single_rank):
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.record import RECORD_KEY

    record = dataclasses.replace(TINY, vocab_size=4096)  # the bundled tokenizer's vocabulary
    model = random_model(record)
    root = tmp_path_factory.mktemp("bench") / "run"
    checkpoint.save(root / "checkpoints", 5, {"model": model.sharded_state_dict(prefix=""),
                                              RECORD_KEY: record.to_dict()}, HostTorchDistSaveStrategy())
    return root


def test_packed_sequences_end_documents_with_eod(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document number {i} " * 5}) + "\n" for i in range(40)))
    tokens, eod = packed_sequences(corpus, TOKENIZER, 32, 4, seed=0)
    assert tokens.shape == (4, 32) and (tokens == eod).sum() >= 3


def test_benchmark_reports_the_counters_of_each_layout(run_folder, tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"text {i} about experts and ranks " * 4}) + "\n"
                              for i in range(60)))
    assert main(["--corpus", str(corpus), "--tokenizer", TOKENIZER, "--ep", "2", "4", "--steps", "2",
                 "--global-batch", "4", "--seq-length", "32", "--variant", f"EMO={run_folder}",
                 "--json", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [r["ep"] for r in rows] == [2, 4]
    for row in rows:
        # top-2 of 8 experts: a slot leaves the rank with chance about (ep - 1)/ep
        assert 0.2 < row["offrank_share"] < 1
        slots_per_step = 4 // row["ep"] * 32 * 2 * 2  # tokens per rank × top-2 × 2 layers
        assert row["bytes"] == pytest.approx(row["offrank_share"] * slots_per_step * 32 * 4, rel=1e-5)
        assert row["bytes_dedup"] <= row["bytes"]
        assert row["validation_loss"] is None
    assert "| 4 | EMO |" in capsys.readouterr().out
