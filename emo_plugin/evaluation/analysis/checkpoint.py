"""Loading an EMO Hugging Face checkpoint for analysis, and the routing knobs the tools expose."""

from __future__ import annotations

import json
from pathlib import Path

from emo_plugin.dtypes import DTYPES
from emo_plugin.errors import AnalysisError


def load_emo_model(checkpoint_dir: str | Path, dtype: str = "fp32", device: str = "cpu"):
    """The checkpoint as an `EmoForCausalLM` in eval mode, loaded with emo_plugin's own modelling code.

    emo_plugin's code (not the copy inside the checkpoint) is used so `set_expert_mask` and the document pools
    behave as documented here, whichever emo_plugin version wrote the checkpoint.
    """
    from emo_plugin.hf import EmoForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / "config.json"
    if not config_file.is_file():
        raise AnalysisError(f"{checkpoint_dir}: not a Hugging Face checkpoint directory (no config.json)")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "emo":
        raise AnalysisError(f"{config_file}: model_type is {model_type!r}, expected 'emo'")
    if dtype not in DTYPES:
        raise AnalysisError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model = EmoForCausalLM.from_pretrained(str(checkpoint_dir), dtype=DTYPES[dtype])
    return model.to(device).eval()


def set_inference_pool_size(model, pool_size: int | None) -> None:
    """--inference-pool-size: EMO's document-pool routing with P experts per document, or off (None or 0)."""
    try:
        model.set_inference_pool_size(pool_size or None)
    except ValueError as error:
        raise AnalysisError(f"--inference-pool-size: {error}") from None


def eos_token_id(model) -> int:
    """The eos id that delimits documents (the first one when the config lists several)."""
    eos = model.config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        raise AnalysisError("the checkpoint's config.json has no eos_token_id: EMO documents need one")
    return int(eos)


def pad_token_id(model) -> int:
    """Any valid id works for padding (padded positions are masked); the config's pad id when it has one."""
    pad = model.config.pad_token_id
    return 0 if pad is None else int(pad)
