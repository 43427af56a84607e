"""Turns one log line into a record.

A JSON object line is the record. Anything else is kept, never lost: a JSON
array or scalar, or plain text, becomes ``{"message": ...}``; invalid UTF-8 is
decoded with replacement characters and flagged.
"""

from __future__ import annotations

__all__ = ["TIMESTAMP_FIELDS", "parse_line", "record_time"]

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

TIMESTAMP_FIELDS = ("timestamp", "time", "ts", "@timestamp")
_YEAR_10000 = 253_402_300_800.0


def parse_line(line: bytes) -> tuple[dict[str, Any], list[str]]:
    """Return the record and its flags (empty, or the reason it was wrapped)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        lenient = _lenient_object(line)
        if lenient is not None:
            return lenient
        try:
            return {"message": line.decode("utf-8")}, ["wrapped"]
        except UnicodeDecodeError:
            return {"message": line.decode("utf-8", "replace")}, ["invalid_utf8"]
    if isinstance(value, dict):
        return value, []
    return {"message": value}, ["wrapped"]


def _lenient_object(line: bytes) -> tuple[dict[str, Any], list[str]] | None:
    """A JSON object orjson refuses but Python's parser reads: invalid UTF-8 in a
    string, ``NaN``/``Infinity``, lone surrogate escapes. Kept as a record (flagged),
    so its keys are redacted like any record's and its fields stay queryable."""
    if not line.lstrip().startswith(b"{"):
        return None
    flags: list[str] = []
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        flags.append("invalid_utf8")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return _without_surrogates(value), [*flags, "nonstandard_json"]


def _without_surrogates(record: dict[str, Any]) -> dict[str, Any]:
    """Lone surrogates become U+FFFD, as invalid UTF-8 does: no encoder takes them."""
    stack: list[Any] = [record]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, item in items:
            value = _replace_surrogates(item) if isinstance(item, str) else item
            if isinstance(value, dict | list):
                stack.append(value)
            if isinstance(node, dict) and isinstance(key, str):
                clean_key = _replace_surrogates(key)
                if clean_key != key:
                    del node[key]
                node[clean_key] = value
            else:
                node[key] = value
    return record


def _replace_surrogates(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def record_time(
    record: dict[str, Any], default: float, fields: Sequence[str] = TIMESTAMP_FIELDS
) -> float:
    """The record's own time (the first of ``fields`` that parses), else ``default``."""
    for name in fields:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00", 1))
            except ValueError:
                continue
            if parsed.tzinfo is None:
                # The common JSON formatters write naive UTC (``utcnow().isoformat()``).
                parsed = parsed.replace(tzinfo=timezone.utc)
            return _plausible(parsed.timestamp(), default)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Epoch seconds, or milliseconds when too large to be seconds.
            seconds = float(value) / 1000.0 if value > 1e11 else float(value)
            return _plausible(seconds, default)
    return default


def _plausible(seconds: float, default: float) -> float:
    """Keep times that format as a four-digit year; others fall back to the read time."""
    return seconds if 0.0 <= seconds < _YEAR_10000 else default
