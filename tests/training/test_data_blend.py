"""A weighted blend of datasets (``data.paths: [w1, p1, w2, p2]``) builds train and validation splits."""

from emo_plugin.cli.pretrain import parse_config
from emo_plugin.training.data import build_datasets
from tests.helpers import resolved


def test_weighted_blend_builds_train_and_valid(corpus_prefix, tmp_path):
    cfg = parse_config(
        [
            "--config", "tiny_cpu",
            f"--data.paths=0.3,{corpus_prefix},0.7,{corpus_prefix}",
            f"--data.cache_dir={tmp_path}",
        ]
    )
    cfg.schedule.train_iters, cfg.schedule.lr_warmup_iters, cfg.eval.iters, cfg.eval.interval = 8, 1, 1, 0
    # 64 training samples, 16 validation samples (two rounds of one batch)
    data = build_datasets(resolved(cfg))
    assert len(data.train) >= 64 and len(data.valid) >= 8
    sample = data.train[0]
    assert sample["doc_ids"].shape == (128,) and sample["doc_ids"].min() >= 1
