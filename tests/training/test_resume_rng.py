"""Resuming restores the host random generator: the draws after a load are the draws after the save."""

import torch


def test_save_reseed_load_restores_the_generator(megatron_single_rank, tmp_path):
    from emo_plugin.training import checkpoint
    from emo_plugin.training.builders import build_transformer_config
    from emo_plugin.training.config import TrainingConfig
    from emo_plugin.training.host_backend import HostBackend

    cfg = TrainingConfig()
    cfg.data.tokenizer_model = "examples/data/tokenizer.model"
    torch.manual_seed(0)
    backend = HostBackend(cfg, build_transformer_config(cfg, "cpu"), vocab_size=4096, seq_length=16)
    state = backend.sharded_state_dict()
    state.update(iteration=1, consumed_samples=8, world_size=1, **backend.common_state())
    checkpoint.save(tmp_path, 1, state, backend.save_strategy)
    after_save = torch.rand(16)

    torch.manual_seed(12345)  # a restarted job seeds itself before it loads
    loaded = checkpoint.load(tmp_path, 1, backend.sharded_state_dict(is_loading=True))
    backend.load_state(loaded, checkpoint.load_common(tmp_path, 1))
    assert torch.equal(torch.rand(16), after_save)
