"""The model Megatron-LM builds for EMO: its own ``GPTModelConfig`` with an ``EmoTransformerConfig`` and EMO's spec.

Megatron-LM 0.19 builds models from a ``GPTModelConfig`` (``megatron.training.models.gpt``) made from the parsed
flags by ``gpt_config_from_args``; its ``transformer_layer_spec`` slot takes a function of the config and the
virtual pipeline stage. EMO fills the two seams and nothing else: the transformer config is Megatron-LM's own
translation of the flags into ``EmoTransformerConfig`` (``core_transformer_config_from_args`` with the routing
recipe of the run's model record), and the spec is Megatron's decoder block spec with EMO's MoE layer and router
(``model/spec.py``), TE or local as ``--transformer-impl`` says.
"""

from __future__ import annotations

import copy
from argparse import Namespace

from megatron.training.argument_utils import core_transformer_config_from_args, gpt_config_from_args
from megatron.training.models.gpt import GPTModelConfig

from emo_plugin.megatron_lm.metrics import finalize_model_grads_and_log_emo
from emo_plugin.model.megatron_config import router_config
from emo_plugin.model.record import ModelRecord
from emo_plugin.model.spec import emo_decoder_block_spec
from emo_plugin.moe.config import EmoTransformerConfig


def emo_layer_spec(model_config: GPTModelConfig, vp_stage: int | None = None):
    """``GPTModelConfig.transformer_layer_spec``: this virtual stage's decoder block with EMO MoE layers."""
    transformer = model_config.transformer
    return emo_decoder_block_spec(
        transformer, use_transformer_engine=transformer.transformer_impl == "transformer_engine", vp_stage=vp_stage
    )


def emo_transformer_config(args: Namespace, record: ModelRecord) -> EmoTransformerConfig:
    """Megatron-LM's transformer config of ``args`` as an ``EmoTransformerConfig`` routing with ``record``'s recipe.

    Raises ``ConfigError`` for Megatron settings EMO refuses (``moe/config.py``) and lets Megatron's own checks
    raise as they do under ``pretrain_gpt.py``.
    """
    with_router = copy.copy(args)  # core_transformer_config_from_args copies every args attribute named as a field
    with_router.emo = router_config(record, lb_scope=args.emo_lb_scope, seed=args.seed)
    config = core_transformer_config_from_args(with_router, config_class=EmoTransformerConfig)
    config.finalize_model_grads_func = finalize_model_grads_and_log_emo
    return config


def emo_model_config(args: Namespace, record: ModelRecord) -> GPTModelConfig:
    """The ``GPTModelConfig`` ``pretrain`` builds the EMO model from."""
    model_config = gpt_config_from_args(args, config=emo_transformer_config(args, record))
    model_config.transformer_layer_spec = emo_layer_spec
    return model_config
