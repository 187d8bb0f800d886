"""The exported HF model computes what the Megatron model computes, and the folder is a complete HF model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from emo_plugin.moe.routing_ids import build_routing_ids
from tests.convert.checkpoint_workers import TINY, random_model


def megatron_logits(model, tokens, routing_ids=None):
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, positions, None, padding_mask=routing_ids)


def test_logits_equal_with_unrestricted_routing(megatron_model, hf_model):
    tokens = torch.randint(3, TINY.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hf_logits = hf_model(tokens).logits
    torch.testing.assert_close(hf_logits, megatron_logits(megatron_model, tokens), rtol=1e-5, atol=1e-5)


def test_logits_equal_with_emo_document_pools(megatron_model, hf_folder):
    """Megatron eval pools (emo.pool_eval) = HF `emo_inference_pool_size` on single-document inputs."""
    from emo_plugin.hf import EmoForCausalLM

    pooled = random_model(pool_eval=3)  # same seed → same weights as megatron_model
    hf = EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32, emo_inference_pool_size=3).eval()
    tokens = torch.randint(3, TINY.vocab_size, (2, 15), generator=torch.Generator().manual_seed(1))
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=TINY.eos_token_id, max_documents_per_sequence=4)
    with torch.no_grad():
        hf_logits = hf(tokens).logits
    torch.testing.assert_close(hf_logits, megatron_logits(pooled, tokens, ids), rtol=1e-5, atol=1e-5)
    unrestricted = megatron_logits(pooled.eval(), tokens, ids) - megatron_logits(random_model(), tokens)
    assert unrestricted.abs().max() > 1e-4  # the pool really changed the routing


@pytest.mark.parametrize("eos_grouping", ["ends", "starts"])
def test_logits_equal_with_pools_over_several_documents(hf_folder, eos_grouping):
    """HF `emo_eos_grouping` finds the documents Megatron's routing ids give its router, EOS tokens included: an
    EOS in mid-sequence, two in a row, and one as the last token (its own document under "starts")."""
    from emo_plugin.hf import EmoForCausalLM

    pooled = random_model(pool_eval=3)  # same seed → same weights as the exported model
    hf = EmoForCausalLM.from_pretrained(str(hf_folder), dtype=torch.float32, emo_inference_pool_size=3,
                                        emo_eos_grouping=eos_grouping).eval()
    tokens = torch.randint(3, TINY.vocab_size, (2, 15), generator=torch.Generator().manual_seed(3))
    tokens[:, 4] = tokens[1, 9:11] = tokens[0, 14] = TINY.eos_token_id
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=TINY.eos_token_id, max_documents_per_sequence=4,
                            eos_grouping=eos_grouping)
    with torch.no_grad():
        hf_logits = hf(tokens).logits
    torch.testing.assert_close(hf_logits, megatron_logits(pooled, tokens, ids), rtol=1e-5, atol=1e-5)


def test_plain_validation_routing_is_the_exported_models_default(hf_model):
    """The trainer's plain validation loss (evaluation_pool(model, None)) is what the exported model computes by
    default, even for a model trained with pools and for several documents per sequence."""
    from emo_plugin.moe.eval_pool import evaluation_pool

    pooled = random_model(pool_eval=3)  # same seed → same weights as the exported model
    tokens = torch.randint(3, TINY.vocab_size, (2, 15), generator=torch.Generator().manual_seed(2))
    tokens[:, 6] = TINY.eos_token_id
    ids = build_routing_ids(tokens_BS=tokens, eod_token_id=TINY.eos_token_id, max_documents_per_sequence=4)
    with evaluation_pool(pooled, None):
        plain = megatron_logits(pooled, tokens, ids)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tokens).logits, plain, rtol=1e-5, atol=1e-5)
    assert (megatron_logits(pooled, tokens, ids) - plain).abs().max() > 1e-4  # outside it, the pools of 3 apply


def test_folder_is_a_complete_remote_code_checkpoint(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    assert config["model_type"] == "emo" and config["architectures"] == ["EmoForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_emo.EmoForCausalLM"
    assert (config["num_experts"], config["num_experts_per_tok"], config["num_shared_experts"]) == (9, 3, 1)
    assert config["intermediate_size"] == 16 and config["num_key_value_heads"] == 2
    index = json.loads((hf_folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # --max-shard-size split the weights
    assert "model.layers.1.mlp.experts.8.down_proj.weight" in index["weight_map"]  # shared expert = last slot
    model = AutoModelForCausalLM.from_pretrained(str(hf_folder), trust_remote_code=True, dtype=torch.float32)
    assert type(model).__name__ == "EmoForCausalLM"


def test_shared_expert_gate_rows_are_zero(hf_model):
    for layer in hf_model.model.layers:
        assert torch.all(layer.mlp.gate.weight[-1] == 0)


def test_generate_produces_tokens(hf_model):
    prompt = torch.tensor([[5, 9, 11, 4]])
    out = hf_model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape == (1, 10) and torch.equal(out[:, :4], prompt)
    with torch.no_grad():  # cached greedy decoding = argmax of the full forward
        logits = hf_model(out[:, :-1]).logits
    assert torch.equal(logits[0, 3:].argmax(-1), out[0, 4:])
