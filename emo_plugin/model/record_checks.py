"""The rules every EMO model record must satisfy, whichever front end (emo-pretrain, emo-pretrain-megatron) made it.

Each front end names the fields its own way (``model.hidden_size`` / ``--hidden-size``); the rules are here once.
``EmoTransformerConfig`` (``moe/config.py``) adds the rules that relate the record to Megatron's settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emo_plugin.model.record import ModelRecord
from emo_plugin.moe.routing_ids import SEGMENT_MASK

POOL_LIMIT = 2**20  # pool sizes beyond the expert count mean "unrestricted"; huge ones overflow the draw
POSITIVE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "num_moe_experts",
                   "moe_router_topk", "moe_ffn_hidden_size", "seq_length", "rotary_base")
POOL_FIELDS = ("pool_min", "pool_max", "pool_eval", "pool_min_per_layer", "pool_max_per_layer")


def record_problems(record: ModelRecord, key: Callable[[str], str] = str) -> list[tuple[str, Any, str]]:
    """(field, value, what was expected) for each broken rule, in a fixed order; empty if the record is sound.
    ``key`` names a field the way the user set it (``model.hidden_size``, ``--hidden-size``) in the messages.

    Positive shapes that divide as attention and RoPE need, so nothing later divides by zero; pool sizes and the
    document bound inside what the routing-id arithmetic holds.
    """
    problems = [(name, getattr(record, name), "an integer >= 1")
                for name in POSITIVE_FIELDS if getattr(record, name) < 1]
    if problems:
        return problems
    heads = record.num_attention_heads
    if record.hidden_size % heads:
        problems.append(("hidden_size", record.hidden_size, f"a multiple of {key('num_attention_heads')}={heads}"))
    elif (record.hidden_size // heads) % 2:
        problems.append(("hidden_size", record.hidden_size, "an even head dimension for RoPE (hidden_size / "
                         f"num_attention_heads = {record.hidden_size / heads:g})"))
    for name in POOL_FIELDS:
        value = getattr(record, name)  # drawn with int64 tensor arithmetic
        largest = max(value or (0,)) if name.endswith("_per_layer") else value
        if largest > POOL_LIMIT:
            problems.append((name, value, f"at most {POOL_LIMIT} (any pool >= {key('num_moe_experts')}="
                             f"{record.num_moe_experts} is unrestricted)"))
    if record.max_documents_per_sequence > SEGMENT_MASK:
        problems.append(("max_documents_per_sequence", record.max_documents_per_sequence,
                         f"at most {SEGMENT_MASK} (the segment field of a routing id)"))
    if heads % record.num_query_groups:
        problems.append(("num_query_groups", record.num_query_groups,
                         f"a divisor of {key('num_attention_heads')}={heads}"))
    return problems
