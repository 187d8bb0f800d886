"""``data.paths`` as Megatron reads it: dataset prefixes, or a blend ``w1 prefix1 w2 prefix2 ...``.

Shared by the config validation (which checks that each prefix exists) and the data builder.
"""

from __future__ import annotations

from emo_plugin.errors import ConfigError


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_paths(paths: list[str]) -> tuple[list[str], list[float] | None]:
    """``data.paths`` as (prefixes, blend weights or None); a malformed blend is a ``ConfigError``."""
    items = list(paths)
    if not items or not _is_number(items[0]):
        return items, None
    weights, prefixes = items[0::2], items[1::2]
    if len(weights) != len(prefixes) or not all(_is_number(w) and float(w) > 0 for w in weights):
        raise ConfigError(
            f"data.paths={items!r}: expected prefixes, or a blend 'w1 prefix1 w2 prefix2 ...' with positive weights"
        )
    return prefixes, [float(w) for w in weights]
