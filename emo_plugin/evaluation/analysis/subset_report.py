"""The markdown table of a subset evaluation: held-out loss per domain and expert fraction, with the rise over
the full model (the number the EMO paper's claim is about: small for EMO, large for a standard MoE)."""

from __future__ import annotations


def fraction_label(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def loss_table(results: dict, labels: list[str], loss_key: str) -> str:
    """Rows: domains then the mean; columns: the subsets (`25%` or a layer budget); cells: `loss (+rise)` for
    `loss_key` ("loss" or "finetuned_loss")."""
    header = "| domain | full model | " + " | ".join(labels) + " |"
    lines = [header, "|" + "---|" * (len(labels) + 2)]
    rows = list(results["domains"].items()) + [("**mean**", results["mean"])]
    for name, domain in rows:
        cells = [f"{domain['full_loss']:.4f}"]
        for label in labels:
            entry = domain["subsets"][label]
            loss = entry.get(loss_key)
            cells.append("–" if loss is None else f"{loss:.4f} ({loss - domain['full_loss']:+.4f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def calibration_words(settings: dict) -> str:
    if settings["task_prompts"]:
        examples = "all" if settings["num_examples"] is None else settings["num_examples"]
        return f"{settings['num_shots']}-shot task prompts (at most {examples} per domain)"
    return f"{settings['calib_docs']} calibration documents per domain"


def markdown_report(results: dict, labels: list[str]) -> str:
    settings = results["settings"]
    parts = [
        f"# Held-out loss with expert subsets: `{settings['checkpoint']}`",
        "",
        f"Selection `{settings['method']}` from {calibration_words(settings)}; masking "
        f"(= physical pruning). Cells: mean next-token loss in nats (rise over the full model).",
        "",
        loss_table(results, labels, "loss"),
    ]
    if settings["finetune_steps"] or settings["finetune_epochs"]:
        length = (f"{settings['finetune_steps']} fine-tuning steps" if settings["finetune_steps"]
                  else f"{settings['finetune_epochs']} fine-tuning epoch(s)")
        parts += [
            "",
            f"After {length} (AdamW, lr {settings['finetune_lr']:g}, loss on {settings['finetune_loss']} "
            "tokens) on the calibration data; the rise is still over the full model without fine-tuning.",
            "",
            loss_table(results, labels, "finetuned_loss"),
        ]
    return "\n".join(parts) + "\n"
