"""The model card (``README.md``) of an exported EMO folder, in the Hugging Face convention.

YAML metadata first (library, pipeline, tags), then what the model is, how to load it, how expert subsets and
the optional EMO inference pool work, and the training data and settings. Everything specific comes from the
written config.json and from the training config the trainer stores in the checkpoint; a setting that the
checkpoint does not record is said to be unknown rather than guessed.
"""

from __future__ import annotations

from pathlib import Path


def resolved_run(values: dict | None):
    """(TrainingConfig, resolved ModelSize) of the training config stored in a checkpoint, or None if absent."""
    if not isinstance(values, dict):
        return None
    from emo_plugin.training.builders import resolved_size
    from emo_plugin.training.config import TrainingConfig, apply_mapping

    cfg = TrainingConfig()
    apply_mapping(cfg, values, "training config stored in the checkpoint")
    return cfg, resolved_size(cfg)


def _learning_rate(cfg) -> str:
    sch = cfg.schedule
    if sch.anneal_iters is not None:
        return (f"anneal: linear over the last {sch.anneal_iters} steps from the loaded checkpoint's lr to "
                f"{sch.anneal_min_lr}")
    wsd = f" (last {sch.lr_wsd_decay_iters} steps {sch.lr_wsd_decay_style})" if sch.lr_decay_style == "WSD" else ""
    return (f"{cfg.optimizer.lr} peak, {cfg.optimizer.min_lr} final, {sch.lr_decay_style} decay{wsd}, "
            f"{sch.lr_warmup_iters} warm-up steps")


def training_settings(cfg, size) -> dict:
    """The run's data and settings as shown in the card, resolved as the trainer resolves them."""
    tokens = cfg.schedule.train_iters * cfg.batch.global_batch_size * size.seq_length
    return {
        "training data": ", ".join(map(str, cfg.data.paths)) or cfg.data.corpus or "not recorded",
        "train/valid/test split": cfg.data.split,
        "tokenizer": cfg.data.tokenizer_model or "not recorded",
        "model size (emo_plugin.model.sizes)": cfg.model.size,
        "sequence length": size.seq_length,
        "optimizer steps": cfg.schedule.train_iters,
        "global batch (sequences)": cfg.batch.global_batch_size,
        "tokens seen": f"{tokens:,}",
        "learning rate": _learning_rate(cfg),
        "weight decay / grad clip": f"{cfg.optimizer.weight_decay} / {cfg.optimizer.clip_grad}",
        "precision": cfg.precision.dtype,
        "EMO pool size in training": f"drawn per document from [{size.pool_min}, {size.pool_max}]",
        "EMO pool size in evaluation": size.pool_eval,
        "load-balancing coefficient": f"{size.lb_coeff} ({cfg.emo.lb_scope})",
        "router z-loss coefficient": size.z_loss_coeff,
        "intra-document attention": cfg.data.intra_document_attention,
        "seed": cfg.seed,
    }


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
        "(`model_type: emo`, OLMoE parameter names, shared experts in the last expert slots).",
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
