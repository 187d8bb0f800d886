"""Selectable experts per contiguous block of router rows, when trailing rows are inert padding.

Megatron puts expert-parallel rank p's experts in one contiguous block of router rows, and rank-limited pools
count groups the same way; the inert slots that pad the routed experts (``num_inert_experts``) are the last rows,
so the last blocks hold fewer experts a token can choose. Both the router's validation and the placement
search need that count.
"""

from __future__ import annotations


def selectable_per_block(num_rows: int, num_selectable: int, num_blocks: int) -> list[int]:
    """Selectable experts in each of ``num_blocks`` equal blocks of ``num_rows`` router rows."""
    size = num_rows // num_blocks
    return [max(0, min(size, num_selectable - block * size)) for block in range(num_blocks)]
