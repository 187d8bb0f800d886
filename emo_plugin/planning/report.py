"""The plan as text: one block per pipeline stage, then the verdict and, when it does not fit, what would."""

from __future__ import annotations

from emo_plugin.planning.plan import GIB, Plan, StagePlan

GB = 1e9


def _gib(n: int) -> str:
    return f"{n / GIB:6.2f}"


def _stage_block(plan: Plan, s: StagePlan) -> list[str]:
    layout = plan.layout
    ranks = layout.world_size // layout.pp
    a, st = s.activations, s.states
    lines = [
        f"pipeline stage {s.stage} ({ranks} ranks alike, {s.layers} layers"
        + (", embedding" if s.stage == 0 else "") + (", output layer" if s.stage == layout.pp - 1 else "") + "):",
        f"  parameters        dense {s.parameters.dense:>14,}  expert {s.parameters.expert:>14,}  "
        f"total {s.parameters.total:>14,}",
        f"  memory GiB        parameters {_gib(st.parameters)}  gradients {_gib(st.gradients)}  "
        f"optimizer {_gib(st.optimizer)}",
        f"  activations GiB   per micro-batch {_gib(a.per_micro_batch)} (MoE recompute "
        f"{_gib(a.per_micro_batch_recompute)})  × {a.in_flight:g} in flight: peak {_gib(a.peak)} (MoE recompute "
        f"{_gib(a.peak_recompute)})",
        f"  total GiB         {_gib(s.total)}  (activations {'with' if s.recompute else 'without'} MoE recompute, "
        "as configured)",
        "  traffic per step  " + ("none (single rank)" if not s.collectives else ""),
    ]
    for c in s.collectives:
        lines.append(f"    {c.name:<44} group {c.group_size:>3}  {c.bytes_per_step / GB:10.3f} GB sent per rank")
    return lines


def render(plan: Plan, suggestions: list | None = None) -> str:
    record, layout = plan.record, plan.layout
    tokens = plan.global_batch_size * record.seq_length
    lines = [
        f"plan for {plan.size_name}: {record.num_layers} layers, d {record.hidden_size}, "
        f"{record.num_moe_experts} routed "
        f"expert slots ({record.num_inert_experts} inert), top-{record.moe_router_topk} + {record.num_shared_experts} "
        f"shared, vocab {plan.vocab_size:,} "
        f"({plan.vocab_source}), sequence {record.seq_length}",
        f"layout: {layout.describe()}"
        + (f", {plan.virtual_stages} virtual stages (interleaved 1F1B)" if plan.virtual_stages > 1 else "")
        + f"; device {plan.device}, {plan.implementation} layers",
        f"batch: global {plan.global_batch_size} = micro {plan.micro_batch_size} × DP {layout.dp} × "
        f"{plan.num_micro_batches} micro-batches ({tokens:,} tokens per step)",
        f"model FLOPs per step (trainer's MFU formula): {plan.flops_per_step:.4e} "
        f"({plan.flops_per_step / layout.world_size / 1e12:,.1f} TFLOP per rank)",
        "method: parameters exact; activations per Korthikanti et al. 2022 adapted to RMSNorm/RoPE/GQA/flash "
        "attention/SwiGLU MoE (emo_plugin/planning/activations.py); traffic = bytes each rank sends (ring "
        "algorithms), balanced expert load; see docs/planning.md",
        "",
    ]
    for s in plan.stages:
        lines += _stage_block(plan, s) + [""]
    worst = plan.worst
    budget = (f"{_gib(plan.available).strip()} GiB available (plan.device_memory_gib "
              f"{plan.device_memory / GIB:g} − plan.reserved_gib {plan.reserved / GIB:g})")
    if plan.fits:
        lines.append(f"verdict: fits — largest rank (stage {worst.stage}) needs {_gib(worst.total).strip()} GiB of "
                     f"{budget}")
    else:
        st = worst.states
        lines.append(
            f"verdict: does not fit — stage {worst.stage} needs {_gib(worst.total).strip()} GiB (parameters "
            f"{_gib(st.parameters).strip()}, gradients {_gib(st.gradients).strip()}, optimizer "
            f"{_gib(st.optimizer).strip()}, activations {_gib(worst.activation_peak).strip()}) > {budget}")
        if suggestions:
            lines.append("changes the planner predicts would fit:")
            for change, alt in suggestions:
                flags = " ".join(f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in change.items())
                lines.append(f"  {flags}   → {_gib(alt.worst.total).strip()} GiB per rank")
        else:
            lines.append("no single or combined change of EP, MoE recompute, micro-batch or distributed optimizer "
                         "fits; add GPUs, tensor or pipeline parallelism")
    return "\n".join(lines)
