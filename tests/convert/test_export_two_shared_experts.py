"""Two shared experts: Megatron packs them as ONE MLP of width 2·F (fc1 = [gate_1; gate_2; up_1; up_2]); the
export must cut it into two HF experts. With a single shared expert a wrong cut changes nothing, so this
checks the cut against the Megatron forward (fp32, different op order: 1e-5)."""

import dataclasses

import torch

from tests.convert.checkpoint_workers import TINY, random_model


def test_two_shared_experts_export_computes_the_megatron_logits(megatron_single_rank, tmp_path):
    from emo_plugin import checkpoint
    from emo_plugin.convert import export_to_hf
    from emo_plugin.hf import EmoForCausalLM
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy
    from emo_plugin.model.record import RECORD_KEY

    arch = dataclasses.replace(TINY, num_shared_experts=2)
    model = random_model(arch)
    state = {"model": model.sharded_state_dict(prefix=""), RECORD_KEY: arch.to_dict()}
    checkpoint.save(tmp_path / "ckpt", 1, state, HostTorchDistSaveStrategy())
    export_to_hf(tmp_path / "ckpt", tmp_path / "hf", dtype="fp32", tokenizer="examples/data/tokenizer.model",
                 progress=False)
    hf = EmoForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    assert hf.config.num_shared_experts == 2
    tokens = torch.randint(3, arch.vocab_size, (2, 13), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(tokens, torch.arange(13).expand_as(tokens), None)
        torch.testing.assert_close(hf(tokens).logits, expected, rtol=1e-5, atol=1e-5)
