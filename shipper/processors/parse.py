"""Turns one log line into a record.

A JSON object line is the record. Anything else is kept, never lost: a JSON
array or scalar, or plain text, becomes ``{"message": ...}``; invalid UTF-8 is
decoded with replacement characters and flagged.
"""

from __future__ import annotations

__all__ = ["TIMESTAMP_FIELDS", "parse_line", "record_time"]

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
        try:
            return {"message": line.decode("utf-8")}, ["wrapped"]
        except UnicodeDecodeError:
            return {"message": line.decode("utf-8", "replace")}, ["invalid_utf8"]
    if isinstance(value, dict):
        return value, []
    return {"message": value}, ["wrapped"]


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
