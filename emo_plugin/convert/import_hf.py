"""EMO Hugging Face folder (AI2 layout) → Megatron dist checkpoint loadable under any TP/EP/PP.

The HF tensors fill a 1-rank host Megatron model, which is saved with ``dist_checkpointing`` (torch_dist,
synchronous host writer) in the trainer's folder layout (``iter_0000000`` + ``latest_checkpointed_iteration
.txt``); Megatron reshards it on load. When the target expert-parallel size does not divide the routed experts
(AI2: 127 routed + 1 shared), trailing *inert* experts with zero weights pad the count; the EMO router never
selects them (``emo.num_inert_experts``) and the exporter drops them again. The common state holds the model
record (``emo_plugin.model.record.RECORD_KEY``) so export needs no separate config.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from emo_plugin.convert import hf_names as N
from emo_plugin.convert import megatron_keys as K
from emo_plugin.convert.errors import ConversionError, shape_error
from emo_plugin.convert.hf_config import record_from_hf_config
from emo_plugin.convert.hf_weights import HfWeights
from emo_plugin.convert.megatron_host import build_host_model
from emo_plugin.convert.output_dir import atomic_output_dir
from emo_plugin.model.record import RECORD_KEY, ModelRecord

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")
HF_LAYER = re.compile(r"model\.layers\.(\d+)\.")
EXPERT = re.compile(r"mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12])\.weight")


def read_hf_record(folder: str | Path) -> ModelRecord:
    from emo_plugin.hf import EmoConfig

    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{folder}: not a Hugging Face checkpoint (no config.json)")
    values = json.loads(config_file.read_text())
    if values.get("model_type") != "emo":
        raise ConversionError(f"{config_file}: model_type is {values.get('model_type')!r}, expected 'emo'")
    return record_from_hf_config(EmoConfig.from_dict(values))


def check_layer_count(hf: HfWeights, arch: ModelRecord) -> None:
    """The weights must hold exactly the config's layers: a shorter config would silently drop layers."""
    found = {int(m.group(1)) for m in map(HF_LAYER.match, hf.names()) if m}
    if found != set(range(arch.num_layers)):
        raise ConversionError(
            f"{hf.folder / 'config.json'}: num_hidden_layers={arch.num_layers}, but the weights hold {len(found)} "
            f"layers (indices {min(found, default=None)}..{max(found, default=None)}); "
            "fix num_hidden_layers in config.json to match the checkpoint"
        )


class _HfToMegatron:
    """The value of each host-model parameter, computed from the HF tensors (with their shapes checked)."""

    def __init__(self, hf: HfWeights, arch: ModelRecord):
        self.hf, self.arch = hf, arch
        a = arch
        self.H, self.F = a.hidden_size, a.moe_ffn_hidden_size
        self.R, self.S = a.num_selectable_experts, a.num_shared_experts

    def expert(self, i: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(fc1, fc2) of HF expert slot e of layer i."""
        H, F = self.H, self.F
        gate = self.hf.get(N.expert(i, e, "gate"), (F, H))
        up = self.hf.get(N.expert(i, e, "up"), (F, H))
        return K.merge_gated_fc1([(gate, up)]), self.hf.get(N.expert(i, e, "down"), (H, F))

    def value(self, name: str) -> torch.Tensor:
        a, H = self.arch, self.H
        top = {"embedding.word_embeddings.weight": N.EMBED, "output_layer.weight": N.LM_HEAD}
        if name in top:
            return self.hf.get(top[name], (a.vocab_size, H))
        if name == "decoder.final_layernorm.weight":
            return self.hf.get(N.NORM, (H,))
        match = LAYER.fullmatch(name)
        if not match:
            raise ConversionError(f"no HF source for Megatron parameter {name!r}")
        i, rest = int(match.group(1)), match.group(2)
        if rest == "input_layernorm.weight":
            return self.hf.get(N.layer(i, N.PRE_ATTN_NORM), (H,))
        if rest == "pre_mlp_layernorm.weight":
            return self.hf.get(N.layer(i, N.PRE_FFN_NORM), (H,))
        if rest == "self_attention.linear_qkv.weight":
            q_rows, kv_rows = a.num_attention_heads * a.head_dim, a.num_query_groups * a.head_dim
            q = self.hf.get(N.attn(i, "q"), (q_rows, H))
            k = self.hf.get(N.attn(i, "k"), (kv_rows, H))
            v = self.hf.get(N.attn(i, "v"), (kv_rows, H))
            return K.merge_qkv(q, k, v, a)
        if rest == "self_attention.linear_proj.weight":
            return self.hf.get(N.attn(i, "o"), (H, a.num_attention_heads * a.head_dim))
        if rest == "mlp.router.weight":
            gate = self.hf.get(N.gate(i), (self.R + self.S, H))[: self.R]  # shared rows dropped
            return torch.cat([gate, gate.new_zeros(a.num_inert_experts, H)])
        expert = EXPERT.fullmatch(rest)
        if expert:
            e, which = int(expert.group(1)), expert.group(2)
            if e >= self.R:  # inert padding expert
                return torch.zeros((2 * self.F, H) if which == "linear_fc1" else (H, self.F))
            return self.expert(i, e)[0 if which == "linear_fc1" else 1]
        if rest.startswith("mlp.shared_experts.linear_fc"):
            fc1s, fc2s = zip(*(self.expert(i, self.R + s) for s in range(self.S)))
            if rest.endswith("linear_fc1.weight"):
                return K.merge_gated_fc1([pair for fc1 in fc1s for pair in K.split_gated_fc1(fc1)])
            return torch.cat(fc2s, dim=1)
        raise ConversionError(f"no HF source for Megatron parameter {name!r}")


def fill_host_model(model, hf: HfWeights, arch: ModelRecord, progress: bool = True) -> None:
    source = _HfToMegatron(hf, arch)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in tqdm(params.items(), desc="import", unit="tensor", disable=not progress):
            value = source.value(name)
            if tuple(value.shape) != tuple(param.shape):
                raise shape_error(f"{hf.folder} → Megatron {name}", name, param.shape, value.shape)
            param.copy_(value.to(param.dtype))


def import_from_hf(
    hf_folder: str | Path,
    output: str | Path,
    *,
    target_expert_parallel_size: int = 1,
    dtype: str = "fp32",
    force: bool = False,
    progress: bool = True,
) -> dict:
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy

    arch = read_hf_record(hf_folder).with_inert_padding(target_expert_parallel_size)
    hf = HfWeights(hf_folder)
    check_layer_count(hf, arch)
    model = build_host_model(arch, params_dtype=DTYPES[dtype])
    fill_host_model(model, hf, arch, progress)
    with atomic_output_dir(output, force, inputs=(hf_folder,)) as folder:
        state = {"model": model.sharded_state_dict(prefix=""), RECORD_KEY: arch.to_dict(), "iteration": 0}
        path = checkpoint.save(folder, 0, state, HostTorchDistSaveStrategy())
        if (Path(hf_folder) / "tokenizer.model").is_file():
            shutil.copyfile(Path(hf_folder) / "tokenizer.model", folder / "tokenizer.model")
    return {
        "source": str(hf_folder),
        "output": str(output),
        "iteration_dir": str(Path(output) / path.name),
        "model": arch.to_dict(),
        "inert_experts": arch.num_inert_experts,
    }
