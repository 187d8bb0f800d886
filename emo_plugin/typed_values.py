"""Values from YAML, JSON or the command line turned into a dataclass field's type, in one place.

The training config (``emo_plugin/run/config.py``) and the model record (``emo_plugin/model/record.py``) read
the same kinds of input, so they accept the same spellings (``1e-6`` written as text, ``true``/``off``, ``a,b``) and
refuse the rest with the same message, naming the key.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from emo_plugin.errors import ConfigError

_EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}


def _list_items(value: str) -> list[str]:
    """``a,b``, ``a b`` or the ``[a, b]`` form ``--help`` shows (brackets and quotes are syntax, not names)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip("'\"") for item in text.replace(",", " ").split() if item.strip("'\"")]


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise ``ConfigError`` naming ``key``."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        annotation = next(a for a in args if a is not type(None))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return value
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(str, choices))}")
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else _list_items(value) if isinstance(value, str) else None
        if items is None:
            raise ConfigError(f"{key}={value!r}: expected a list of integers")
        item_type = typing.get_args(annotation)[0]
        return tuple(coerce(item, item_type, f"{key}[{index}]") for index, item in enumerate(items))
    name = _EXPECTED.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if isinstance(value, (dict, list, tuple)) and annotation is not list:
        raise ConfigError(f"{key}={value!r}: expected {name}, got a {type(value).__name__}")
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            text = str(value).strip()
            if re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation is str:
            return str(value)
        if annotation is list:
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return _list_items(str(value))
    except (TypeError, ValueError, OverflowError):
        pass
    else:
        raise ConfigError(f"{key}: unsupported type {annotation}")
    raise ConfigError(f"{key}={value!r}: expected {name}")
