"""GPT decoder specs with EMO MoE layers, built from Megatron's own spec functions.

Megatron 0.19 describes a MoE layer as ``functools.partial(MoELayer, submodules=MoESubmodules(...))``; EMO
swaps in ``EmoMoELayer`` and ``MoESubmodules.router = EmoRouter`` and keeps everything else (experts backend,
grouped GEMM, shared experts, dispatcher choice) exactly as Megatron builds it.
"""

from __future__ import annotations

import dataclasses
import functools

from megatron.core.extensions.transformer_engine import HAVE_TE
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.moe.moe_layer import MoELayer
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

from emo_plugin.model.host_modules import HostDotProductAttention, HostNorm
from emo_plugin.moe.config import EmoTransformerConfig
from emo_plugin.moe.layer import EmoMoELayer
from emo_plugin.moe.router import EmoRouter


def with_emo_moe_layer(mlp_spec):
    """An MLP spec with EMO routing if it builds a Megatron MoE layer; any other spec unchanged."""
    layer_class = mlp_spec.func if isinstance(mlp_spec, functools.partial) else None
    if not (isinstance(layer_class, type) and issubclass(layer_class, MoELayer)):
        return mlp_spec
    submodules = dataclasses.replace(mlp_spec.keywords["submodules"], router=EmoRouter)
    return functools.partial(EmoMoELayer, *mlp_spec.args, **{**mlp_spec.keywords, "submodules": submodules})


def _with_local_moe_norm_key(layer_spec):
    """A TE-spec MoE layer whose pre-MLP norm is checkpointed under the local spec's key.

    Megatron's local spec saves every layer's ``pre_mlp_layernorm`` as ``mlp.linear_fc1.layer_norm_*`` (the
    name of TE's fused norm + fc1 in dense layers); its TE spec keeps a MoE layer's separate norm as
    ``pre_mlp_layernorm.*``. Mapped the same way, CPU (local) and GPU (TE) checkpoints load into each other and
    ``convert.megatron_keys.MLP_NORM`` names the norm in both.
    """
    submodules = layer_spec.submodules
    if submodules.pre_mlp_layernorm is IdentityOp:  # dense TE layer: the norm is fused into linear_fc1
        return layer_spec
    keys = {**submodules.sharded_state_dict_keys_map, "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_"}
    return dataclasses.replace(layer_spec, submodules=dataclasses.replace(submodules, sharded_state_dict_keys_map=keys))


def _host_norm(norm_spec):
    """``HostNorm`` (sequence-parallel capable) where Megatron's local spec fell back to ``WrappedTorchNorm``."""
    return HostNorm if norm_spec is WrappedTorchNorm else norm_spec


def _with_host_norms(layer_spec):
    """The local spec's norms as ``HostNorm`` (same parameters, but sequence-parallel capable); TE norms stay."""
    return _with_host_attention(layer_spec, core_attention=None)


def _with_host_attention(layer_spec, core_attention=HostDotProductAttention):
    attention = layer_spec.submodules.self_attention
    attention = dataclasses.replace(
        attention,
        submodules=dataclasses.replace(
            attention.submodules,
            core_attention=core_attention or attention.submodules.core_attention,
            q_layernorm=_host_norm(attention.submodules.q_layernorm),
            k_layernorm=_host_norm(attention.submodules.k_layernorm),
        ),
    )
    submodules = dataclasses.replace(
        layer_spec.submodules,
        self_attention=attention,
        input_layernorm=_host_norm(layer_spec.submodules.input_layernorm),
        pre_mlp_layernorm=_host_norm(layer_spec.submodules.pre_mlp_layernorm),
    )
    return dataclasses.replace(layer_spec, submodules=submodules)


def emo_decoder_block_spec(
    config: EmoTransformerConfig,
    *,
    use_transformer_engine: bool,
    host_attention: bool = False,
    vp_stage: int | None = None,
    pp_rank: int | None = None,
) -> TransformerBlockSubmodules:
    """Decoder block spec for this pipeline stage with every MoE layer routed by EMO.

    ``use_transformer_engine`` picks Megatron's TE spec (GPU: TE linears, ``TEGroupedMLP`` when
    ``moe_grouped_gemm``) or the local spec (``SequentialMLP``, runs on CPU). ``host_attention`` (local spec
    only) uses ``HostDotProductAttention`` so the model runs without CUDA.
    """
    if not isinstance(config, EmoTransformerConfig):
        raise TypeError(f"emo_decoder_block_spec needs an EmoTransformerConfig, got {type(config).__name__}")
    if host_attention and use_transformer_engine:
        raise ValueError("host_attention replaces Megatron's local attention; it cannot combine with the TE spec")
    if use_transformer_engine and not HAVE_TE:
        raise ImportError(
            "use_transformer_engine=True but Transformer Engine is not importable "
            "(megatron.core.extensions.transformer_engine.HAVE_TE is False): install transformer-engine[pytorch] "
            "(pip install 'emo_plugin[te]') or build the local spec (use_transformer_engine=False)"
        )
    block = get_gpt_decoder_block_spec(
        config, use_transformer_engine=use_transformer_engine, vp_stage=vp_stage, pp_rank=pp_rank
    )
    layer_specs = []
    for layer_spec in block.layer_specs:
        mlp = with_emo_moe_layer(layer_spec.submodules.mlp)
        layer_spec = dataclasses.replace(layer_spec, submodules=dataclasses.replace(layer_spec.submodules, mlp=mlp))
        if use_transformer_engine:
            layer_spec = _with_local_moe_norm_key(layer_spec)
        layer_specs.append(_with_host_attention(layer_spec) if host_attention else _with_host_norms(layer_spec))
    final_norm = _host_norm(block.layer_norm)
    return dataclasses.replace(block, layer_specs=layer_specs, layer_norm=final_norm)
