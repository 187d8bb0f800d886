"""The markdown table of a subset evaluation: held-out loss per domain and expert fraction, with the rise over
the full model (the number the EMO paper's claim is about: small for EMO, large for a standard MoE)."""

from __future__ import annotations


def fraction_label(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def loss_table(results: dict, fractions: list[float], loss_key: str) -> str:
    """Rows: domains then the mean; cells: `loss (+rise)` for `loss_key` ("loss" or "finetuned_loss")."""
    header = "| domain | full model | " + " | ".join(fraction_label(f) for f in fractions) + " |"
    lines = [header, "|" + "---|" * (len(fractions) + 2)]
    rows = list(results["domains"].items()) + [("**mean**", results["mean"])]
    for name, domain in rows:
        cells = [f"{domain['full_loss']:.4f}"]
        for fraction in fractions:
            entry = domain["subsets"][fraction_label(fraction)]
            loss = entry.get(loss_key)
            cells.append("–" if loss is None else f"{loss:.4f} ({loss - domain['full_loss']:+.4f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict, fractions: list[float]) -> str:
    settings = results["settings"]
    parts = [
        f"# Held-out loss with expert subsets: `{settings['checkpoint']}`",
        "",
        f"Selection `{settings['method']}` from {settings['calib_docs']} calibration documents per domain; masking "
        f"(= physical pruning). Cells: mean next-token loss in nats (rise over the full model).",
        "",
        loss_table(results, fractions, "loss"),
    ]
    if settings["finetune_steps"]:
        parts += [
            "",
            f"After {settings['finetune_steps']} fine-tuning steps (AdamW, lr {settings['finetune_lr']:g}) on the "
            "calibration documents; the rise is still over the full model without fine-tuning.",
            "",
            loss_table(results, fractions, "finetuned_loss"),
        ]
    return "\n".join(parts) + "\n"
