"""The non-weight files of an export: a complete config.json, a model card, and a tokenizer that loads plainly."""

import json
import re
import subprocess
import sys

from emo_plugin.hf import EmoConfig
from tests.hf.test_modeling_emo import HF_DIR

# OLMoE fields that AI2's EMO config also carries; a reader missing one would fall back to its own default.
OLMOE_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "rope_theta",
    "attention_bias", "attention_dropout", "clip_qkv", "num_experts_per_tok", "num_experts",
    "output_router_logits", "router_aux_loss_coef", "norm_topk_prob",
)


def test_config_json_states_every_field_the_loading_code_reads(hf_folder):
    values = json.loads((hf_folder / "config.json").read_text())
    assert [name for name in OLMOE_FIELDS if name not in values] == []
    read_by_code = set(re.findall(r"config\.([a-z_]+)\b(?!\.py)", (HF_DIR / "modeling_emo.py").read_text()))
    read_by_code |= set(re.findall(r"self\.(\w+) = ", (HF_DIR / "configuration_emo.py").read_text()))
    fields = {name for name in read_by_code if name != "json" and not callable(getattr(EmoConfig, name, None))}
    assert len(fields) > 20 and sorted(fields - set(values)) == []
    assert (values["hidden_act"], values["attention_bias"], values["clip_qkv"]) == ("silu", False, None)
    reloaded = EmoConfig.from_pretrained(hf_folder).to_dict()
    assert {k: reloaded[k] for k in OLMOE_FIELDS} == {k: values[k] for k in OLMOE_FIELDS}


def test_config_refuses_settings_the_code_does_not_implement():
    import pytest

    for field, value in (("hidden_act", "gelu"), ("attention_bias", True), ("clip_qkv", 8.0)):
        with pytest.raises(ValueError, match=field):
            EmoConfig(**{field: value})


def test_model_card_describes_the_export(hf_folder):
    card = (hf_folder / "README.md").read_text()
    config = json.loads((hf_folder / "config.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert "trust_remote_code=True" in card and "set_expert_mask" in card and "emo_inference_pool_size" in card
    routed = config["num_experts"] - config["num_shared_experts"]
    assert f"{config['num_hidden_layers']} layers, hidden size {config['hidden_size']}" in card
    assert f"{routed} routed + {config['num_shared_experts']} shared SwiGLU experts" in card
    assert "Not recorded: the checkpoint carries no emo_plugin training config" in card  # fixture has none


def test_tokenizer_loads_in_a_fresh_process_as_documented_without_a_prompt(hf_folder):
    """The README's call, in a process that has not imported emo_plugin (nothing registered), stdin closed."""
    code = (
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(hf_folder)!r}, trust_remote_code=True)\n"
        "print(t.encode('hello world', add_special_tokens=False))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(hf_folder / "tokenizer.model"))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == sp.encode("hello world")
