"""The non-weight files of an EMO Hugging Face folder: config.json (with auto_map) and the modelling code.

Written directly rather than through ``model.save_pretrained`` because the exporter never builds the model
(it streams tensors). The result is what ``save_pretrained`` of the registered auto classes writes:
``auto_map`` → ``configuration_emo.EmoConfig`` / ``modeling_emo.EmoForCausalLM`` and the two .py files next to
config.json, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` works anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

AUTO_MAP = {"AutoConfig": "configuration_emo.EmoConfig", "AutoModelForCausalLM": "modeling_emo.EmoForCausalLM"}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def write_config(folder: Path, config, dtype: torch.dtype) -> dict:
    """config.json of an ``EmoConfig``; returns the written dict."""
    import emo_plugin.hf  # noqa: F401  (registers the auto classes)

    values = config.to_dict()
    values.update(architectures=["EmoForCausalLM"], auto_map=dict(AUTO_MAP), model_type="emo")
    values["torch_dtype"] = values["dtype"] = DTYPE_NAMES[dtype]
    (Path(folder) / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return values


def copy_modeling_code(folder: Path) -> None:
    import emo_plugin.hf as hf

    source = Path(hf.__file__).parent
    for name in ("configuration_emo.py", "modeling_emo.py"):
        shutil.copyfile(source / name, Path(folder) / name)


def copy_extra_files(source: Path, folder: Path, names) -> None:
    """Carry files such as the tokenizer and generation config over from another HF folder."""
    for name in names:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, Path(folder) / name)


TOKENIZER_FILES = (
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"
)


def write_hf_folder(source: Path, output: Path, config, tensors, *, max_shard_size, force: bool,
                    extra_files: dict[str, str]) -> dict:
    """An EMO HF folder from ``(name, tensor)`` pairs, with ``config``, the modelling code, ``source``'s tokenizer
    files and ``extra_files`` (name → text), written atomically; returns the safetensors index."""
    from emo_plugin.convert.output_dir import atomic_output_dir
    from emo_plugin.convert.safetensors_writer import ShardedSafetensorsWriter, parse_size

    with atomic_output_dir(output, force, inputs=(source,)) as folder:
        writer = ShardedSafetensorsWriter(folder, parse_size(max_shard_size))
        dtype = None
        for name, tensor in tensors:
            dtype = dtype or tensor.dtype
            writer.add(name, tensor)
        index = writer.close()
        write_config(folder, config, dtype)
        copy_modeling_code(folder)
        copy_extra_files(source, folder, TOKENIZER_FILES)
        for name, text in extra_files.items():
            (folder / name).write_text(text)
    return index
