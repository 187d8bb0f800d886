"""A checkpoint as emo_plugin's trainer writes it (model + optimizer, run config in the common state) exports."""

import json

import torch

from emo_plugin.convert import export_to_hf
from tests.helpers import resolved


def test_export_reads_the_training_config_from_the_checkpoint(megatron_single_rank, tmp_path):
    from emo_plugin import checkpoint
    from emo_plugin.run.config import TrainingConfig, to_dict
    from emo_plugin.training.host_backend import HostBackend

    cfg = TrainingConfig()
    cfg.data.tokenizer_model = "examples/data/tokenizer.model"
    cfg.emo.num_inert_experts = 2  # exported without them
    cfg.data.corpus, cfg.schedule.train_iters, cfg.optimizer.lr, cfg.emo.lb_coeff = "my/corpus.jsonl", 123, 3.5e-4, 0.07
    torch.manual_seed(0)
    backend = HostBackend(resolved(cfg))
    state = backend.sharded_state_dict()
    state.update(iteration=4, consumed_samples=32, world_size=1, config=to_dict(cfg), **backend.common_state())
    checkpoint.save(tmp_path / "run", 4, state, backend.save_strategy)

    summary = export_to_hf(tmp_path / "run", tmp_path / "hf", dtype="fp32", progress=False)
    record = summary["model"]
    assert (record["hidden_size"], record["num_moe_experts"], record["num_inert_experts"]) == (64, 8, 2)
    assert summary["tokenizer"] == "examples/data/tokenizer.model"
    # The run's settings reach config.json and the model card.
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["router_aux_loss_coef"] == 0.07
    card = (tmp_path / "hf" / "README.md").read_text()
    for row in ("| training data | my/corpus.jsonl |", "| optimizer steps | 123 |", "| learning rate | 0.00035 peak",
                "| tokenizer | examples/data/tokenizer.model |", "| load-balancing coefficient | 0.07 (micro_batch) |",
                f"| global batch (sequences) | {cfg.batch.global_batch_size} |"):
        assert row in card, row

    from emo_plugin.hf import EmoForCausalLM
    from emo_plugin.moe.routing_ids import build_routing_ids

    # The tiny size evaluates with document pools of 4 experts: turn them on in the HF model too.
    hf = EmoForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32, emo_inference_pool_size=4).eval()
    model = backend.model.eval()
    tokens = torch.randint(3, 4096, (2, 12), generator=torch.Generator().manual_seed(0))
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=2, max_documents_per_sequence=4)
    with torch.no_grad():
        expected = model(tokens, torch.arange(12).expand_as(tokens), None, padding_mask=ids)
        torch.testing.assert_close(hf(tokens).logits, expected, rtol=1e-5, atol=1e-5)
