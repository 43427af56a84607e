"""JSON text for any parsed value, however deep and whatever its strings hold.

orjson is the fast path everywhere; it refuses values nested deeper than 255
levels and strings holding lone surrogates (both can come out of a parse).
This encoder takes over then: an explicit stack, so no depth is too deep, and
the standard library's string escaping, which writes surrogates as ``\\udXXX``.
"""

from __future__ import annotations

__all__ = ["dumps_any"]

import json
import math
from typing import Any

import orjson

_ASCII_STRING = json.JSONEncoder(ensure_ascii=True).encode


def dumps_any(value: Any, *, sort_keys: bool = False) -> bytes:
    """JSON for ``value``; non-finite floats become ``null`` as orjson writes them."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except (TypeError, orjson.JSONEncodeError):
        return _dumps_iterative(value, sort_keys=sort_keys).encode()


def _dumps_iterative(value: Any, *, sort_keys: bool) -> str:
    out: list[str] = []
    # Items are values to write, or literal text (a closing bracket, a separator).
    stack: list[tuple[bool, Any]] = [(False, value)]
    while stack:
        literal, item = stack.pop()
        if literal:
            out.append(item)
        elif isinstance(item, dict):
            entries = sorted(item.items()) if sort_keys else list(item.items())
            stack.append((True, "}"))
            for index in range(len(entries) - 1, -1, -1):
                key, child = entries[index]
                stack.append((False, child))
                prefix = "," if index else ""
                stack.append((True, f"{prefix}{_ASCII_STRING(str(key))}:"))
            out.append("{")
        elif isinstance(item, list | tuple):
            stack.append((True, "]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append((False, item[index]))
                if index:
                    stack.append((True, ","))
            out.append("[")
        else:
            out.append(_scalar(item))
    return "".join(out)


def _scalar(value: Any) -> str:
    if value is None or value is True or value is False:
        return json.dumps(value)
    if isinstance(value, str):
        return _ASCII_STRING(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    return _ASCII_STRING(str(value))
