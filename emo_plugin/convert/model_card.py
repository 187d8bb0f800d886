"""The model card (``README.md``) of an exported EMO folder, in the Hugging Face convention.

YAML metadata first (library, pipeline, tags), then what the model is, how to load it, how expert subsets and
the optional EMO inference pool work, and the training data and settings. Everything specific comes from the
written config.json, the checkpoint's model record and the training config the trainer stores in the checkpoint;
a setting that the checkpoint does not record is said to be unknown rather than guessed.
"""

from __future__ import annotations

from pathlib import Path

from emo_plugin.model.record import ModelRecord


def _recorded(run: dict, key: str):
    """``section.field`` of the stored run config, or "not recorded" (a checkpoint of an older version)."""
    section, name = key.split(".")
    value = (run.get(section) or {}).get(name)
    return "not recorded" if value is None else value


def _learning_rate(run: dict) -> str:
    schedule = run.get("schedule") or {}
    if schedule.get("anneal_iters") is not None:
        return (f"anneal: linear over the last {schedule['anneal_iters']} steps from the loaded checkpoint's lr to "
                f"{_recorded(run, 'schedule.anneal_min_lr')}")
    style = _recorded(run, "schedule.lr_decay_style")
    wsd = (f" (last {_recorded(run, 'schedule.lr_wsd_decay_iters')} steps "
           f"{_recorded(run, 'schedule.lr_wsd_decay_style')})" if style == "WSD" else "")
    return (f"{_recorded(run, 'optimizer.lr')} peak, {_recorded(run, 'optimizer.min_lr')} final, {style} decay{wsd}, "
            f"{_recorded(run, 'schedule.lr_warmup_iters')} warm-up steps")


def training_settings(run: dict, record: ModelRecord) -> dict:
    """The run's data and settings as shown in the card: the stored run config (the plain mapping the trainer
    writes) for how it trained, the model record for the sequence length and the EMO recipe."""
    steps, batch = _recorded(run, "schedule.train_iters"), _recorded(run, "batch.global_batch_size")
    tokens = f"{steps * batch * record.seq_length:,}" if isinstance(steps, int) and isinstance(batch, int) \
        else "not recorded"
    paths = (run.get("data") or {}).get("paths") or []
    corpus = _recorded(run, "data.corpus")
    return {
        "training data": ", ".join(map(str, paths)) or corpus,
        "train/valid/test split": _recorded(run, "data.split"),
        "tokenizer": _recorded(run, "data.tokenizer_model"),
        "model size (emo_plugin.model.sizes)": _recorded(run, "model.size"),
        "sequence length": record.seq_length,
        "optimizer steps": steps,
        "global batch (sequences)": batch,
        "tokens seen": tokens,
        "learning rate": _learning_rate(run),
        "weight decay / grad clip": f"{_recorded(run, 'optimizer.weight_decay')} / "
        f"{_recorded(run, 'optimizer.clip_grad')}",
        "precision": _recorded(run, "precision.dtype"),
        "EMO pool size in training": _training_pools(record),
        "EOS token routed with": f"the document it {record.eos_grouping} (eos_grouping: {record.eos_grouping})",
        "EMO pool size in evaluation": record.pool_eval,
        "load-balancing coefficient": f"{record.lb_coeff} ({_recorded(run, 'emo.lb_scope')})",
        "router z-loss coefficient": record.z_loss_coeff,
        "intra-document attention": _recorded(run, "data.intra_document_attention"),
        "seed": run.get("seed", "not recorded"),
    }


def _training_pools(record) -> str:
    if record.pool_min_per_layer is None and record.pool_max_per_layer is None:
        return f"drawn per document from [{record.pool_min}, {record.pool_max}]"
    ranges = ", ".join(f"[{low}, {high}]" for low, high in zip(
        record.pool_min_per_layer or [record.pool_min] * record.num_layers,
        record.pool_max_per_layer or [record.pool_max] * record.num_layers))
    return f"drawn per document from the layer's range: {ranges} (first layer first)"


def model_card(config: dict, training: dict | None, parameters: int, tokenizer: bool) -> str:
    """Markdown text of README.md for the folder whose config.json holds ``config``."""
    n_slots, n_shared = config["num_experts"], config["num_shared_experts"]
    n_routed, k_routed = n_slots - n_shared, config["num_experts_per_tok"] - n_shared
    shape = (
        f"{config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"{config['num_attention_heads']} attention heads ({config['num_key_value_heads']} KV heads), "
        f"{n_routed} routed + {n_shared} shared SwiGLU experts of width {config['intermediate_size']} per layer, "
        f"{k_routed} routed experts per token, vocabulary {config['vocab_size']}, "
        f"RoPE θ {config['rope_theta']:g}, {parameters:,} parameters ({config['dtype']})"
    )
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [mixture-of-experts, emo, custom_code]",
        "---",
        "",
        "# EMO mixture-of-experts language model",
        "",
        "A decoder-only mixture-of-experts model trained with EMO routing (emergent modularity): during "
        "training, all tokens of a document choose their experts from one per-document pool of experts, so "
        "experts specialise by domain and a task can later run on a small subset of them. Exported from a "
        "Megatron-Core checkpoint by emo_plugin, in the layout of AI2's released EMO checkpoints "
        "(`model_type: emo`, OLMoE parameter names, shared experts last among each layer's experts).",
        "",
        f"Shape: {shape}.",
        "",
        "## Loading",
        "",
        "The modelling code ships in this folder (`configuration_emo.py`, `modeling_emo.py`), so loading needs "
        "`trust_remote_code=True`; it runs with transformers 4.57 and newer.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("<this folder>", trust_remote_code=True)',
    ]
    if tokenizer:
        lines += [
            'tokenizer = AutoTokenizer.from_pretrained("<this folder>", trust_remote_code=True)',
            'inputs = tokenizer("The experts of this model", return_tensors="pt")',
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20)[0]))",
        ]
    lines += [
        "```",
        "",
        "Routing follows the training model: softmax over the routed experts' router logits, the top "
        f"{k_routed} without renormalisation, plus every shared expert with weight 1.",
        "",
        "## Expert subsets",
        "",
        "`model.set_expert_mask({layer: bool tensor over the routed experts})` restricts routing to the kept "
        "experts (dropped ones get -inf router logits before the softmax), which gives the same logits as a "
        "model physically pruned to them; shared experts are always kept. emo_plugin's "
        "`tools/select_experts.py` and `tools/prune_experts.py` choose a task's experts from a few documents "
        "and write such a pruned folder (`num_experts_per_layer` in its config.json).",
        "",
        "## Optional EMO inference pool",
        "",
        f"`emo_inference_pool_size` (currently `{config.get('emo_inference_pool_size')}`; None = off, plain "
        "top-k as in AI2's released inference) restricts each eos-delimited document of a forward call to the "
        "P routed experts with the largest summed router probability over that document - EMO's "
        "evaluation-time routing. Set it in config.json or with "
        "`AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True, emo_inference_pool_size=32)`. "
        "During cached generation each new token forms its own pool, so use it for scoring full sequences.",
        "",
        "## Training data and settings",
        "",
    ]
    if training is None:
        lines.append("Not recorded: the checkpoint carries no emo_plugin training config (imported or converted).")
    else:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in training.items()]
    return "\n".join(lines) + "\n"


def write_model_card(folder: Path, config: dict, training: dict | None, parameters: int, tokenizer: bool) -> None:
    (Path(folder) / "README.md").write_text(model_card(config, training, parameters, tokenizer))
