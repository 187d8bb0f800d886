"""Resuming restores the host random generator: the draws after a load are the draws after the save."""

import torch

from tests.helpers import resolved


def test_save_reseed_load_restores_the_generator(megatron_single_rank, tmp_path):
    from emo_plugin import checkpoint
    from emo_plugin.run.config import TrainingConfig
    from emo_plugin.training.host_backend import HostBackend

    cfg = TrainingConfig()
    cfg.data.tokenizer_model = "examples/data/tokenizer.model"
    torch.manual_seed(0)
    backend = HostBackend(resolved(cfg))
    state = backend.sharded_state_dict()
    state.update(iteration=1, consumed_samples=8, world_size=1, **backend.common_state())
    checkpoint.save(tmp_path, 1, state, backend.save_strategy)
    after_save = torch.rand(16)

    torch.manual_seed(12345)  # a restarted job seeds itself before it loads
    loaded = checkpoint.load(tmp_path, 1, backend.sharded_state_dict(is_loading=True))
    backend.load_state(loaded, checkpoint.load_common(tmp_path, 1))
    assert torch.equal(torch.rand(16), after_save)


def test_save_load_round_trip_restores_weights_and_adam_state(megatron_single_rank, tmp_path):
    """After two AdamW steps, a backend built from another seed loads the checkpoint: the weights, both moments
    and the step count equal the saved ones, so its next step lands on the same weights (bit for bit)."""
    from emo_plugin import checkpoint
    from emo_plugin.run.config import TrainingConfig
    from emo_plugin.training.host_backend import HostBackend

    cfg = TrainingConfig()
    cfg.data.tokenizer_model = "examples/data/tokenizer.model"

    def backend(seed):
        torch.manual_seed(seed)
        return HostBackend(resolved(cfg))

    def adam_step(b, seed):
        grads = torch.Generator().manual_seed(seed)
        for p in b.model.parameters():
            p.grad = torch.randn(p.shape, generator=grads)
        b.optimizer.step()

    saved = backend(0)
    adam_step(saved, 1)
    adam_step(saved, 2)
    state = saved.sharded_state_dict()
    state.update(iteration=2, consumed_samples=16, world_size=1, **saved.common_state())
    checkpoint.save(tmp_path, 2, state, saved.save_strategy)

    loaded = backend(7)
    loaded.load_state(checkpoint.load(tmp_path, 2, loaded.sharded_state_dict(is_loading=True)),
                      checkpoint.load_common(tmp_path, 2))
    for (name, p), q in zip(saved.model.named_parameters(), loaded.model.parameters()):
        assert torch.equal(p, q), name
        a, b = saved.optimizer.state[p], loaded.optimizer.state[q]
        assert float(b["step"]) == 2.0 and torch.equal(a["exp_avg"], b["exp_avg"]), name
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]), name
    assert [g["lr"] for g in loaded.optimizer.param_groups] == [g["lr"] for g in saved.optimizer.param_groups]
    adam_step(saved, 3)
    adam_step(loaded, 3)
    for (name, p), q in zip(saved.model.named_parameters(), loaded.model.parameters()):
        assert torch.equal(p, q), name


def test_a_resumed_run_keeps_its_own_optimizer_settings(megatron_single_rank, tmp_path):
    """The checkpoint restores weights and moments, but betas, eps and weight decay come from the resumed
    run's config (a run may resume with, say, another beta2): the groups equal a fresh backend's."""
    from emo_plugin import checkpoint
    from emo_plugin.run.config import TrainingConfig
    from emo_plugin.training.host_backend import HostBackend

    def backend(cfg):
        cfg.data.tokenizer_model = "examples/data/tokenizer.model"
        torch.manual_seed(0)
        return HostBackend(resolved(cfg))

    saved = backend(TrainingConfig())
    state = saved.sharded_state_dict()
    state.update(iteration=1, consumed_samples=8, world_size=1, **saved.common_state())
    checkpoint.save(tmp_path, 1, state, saved.save_strategy)

    changed = TrainingConfig()
    changed.optimizer.adam_beta2, changed.optimizer.adam_eps, changed.optimizer.weight_decay = 0.99, 1e-6, 0.02
    resumed = backend(changed)
    expected = [{k: v for k, v in g.items() if k != "params"} for g in resumed.optimizer.param_groups]
    assert expected[0]["betas"] == (0.9, 0.99) and expected[0]["weight_decay"] in (0.0, 0.02)
    resumed.load_state(checkpoint.load(tmp_path, 1, resumed.sharded_state_dict(is_loading=True)),
                       checkpoint.load_common(tmp_path, 1))
    assert [{k: v for k, v in g.items() if k != "params"} for g in resumed.optimizer.param_groups] == expected
