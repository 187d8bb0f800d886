"""Hugging Face side of emo_plugin: the EMO config and model in AI2's released checkpoint format.

Importing this package registers the classes for transformers' auto classes, so `save_pretrained` writes
`auto_map` into config.json and copies `configuration_emo.py` / `modeling_emo.py` next to it: the checkpoint
then loads anywhere with `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`.
"""

from .configuration_emo import EmoConfig
from .modeling_emo import EmoForCausalLM, EmoModel, EmoPreTrainedModel

EmoConfig.register_for_auto_class()
EmoForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["EmoConfig", "EmoForCausalLM", "EmoModel", "EmoPreTrainedModel"]
