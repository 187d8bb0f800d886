"""How many routed (selectable) experts the expert slots hold, in all and per contiguous block of slots.

Megatron's ``num_moe_experts`` counts expert slots (the router's rows): the routed experts a token can choose
followed by ``num_inert_experts`` inert slots that pad them and are never selected. Megatron puts expert-parallel
rank p's experts in one contiguous block of slots, and rank-limited pools count groups the same way; the inert
slots are the last ones, so the last blocks hold fewer routed experts. The model record, the router's validation
and the placement search all take these counts from here.
"""

from __future__ import annotations


def num_selectable_experts(num_expert_slots: int, num_inert_experts: int) -> int:
    """The routed experts a token may choose: the expert slots (``num_moe_experts``) less the inert padding."""
    return num_expert_slots - num_inert_experts


def selectable_per_block(num_rows: int, num_selectable: int, num_blocks: int) -> list[int]:
    """Routed (selectable) experts in each of ``num_blocks`` equal blocks of ``num_rows`` expert slots."""
    size = num_rows // num_blocks
    return [max(0, min(size, num_selectable - block * size)) for block in range(num_blocks)]
