"""Byte-size parsing and formatting for human-written config values such as ``"8MiB"``."""

from __future__ import annotations

__all__ = ["GiB", "KiB", "MiB", "TiB", "format_size", "parse_size"]

import re
from fractions import Fraction

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

#: Lower-cased unit -> multiplier. Binary units are what operators usually mean for buffers;
#: decimal units are accepted because disk and network vendors speak them.
_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_UNIT_NAMES = "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
_SIZE_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[A-Za-z]*)")
_BINARY_DESCENDING = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))


def parse_size(value: int | str) -> int:
    """Return ``value`` as a number of bytes.

    Ints are taken as bytes. Strings are a number (fractions allowed, as in ``"1.5MiB"``)
    and an optional case-insensitive unit. Fractions are computed exactly, so a result that
    is not a whole number of bytes is rejected rather than silently rounded.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        # ValueError, not TypeError: callers handle one exception type for any bad config value.
        raise ValueError(
            f'invalid size {value!r}: expected an integer or a string like "8MiB", '
            f"got {type(value).__name__}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    return _parse_size_text(value)


def _parse_size_text(text: str) -> int:
    """Parse the string form; kept apart so each error names the text the user wrote."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f'invalid size "{text}": must not be negative')
    match = _SIZE_RE.fullmatch(stripped)
    if match is None:
        raise ValueError(
            f'invalid size "{text}": expected a number with an optional unit, '
            'like "8MiB" or "100KB"'
        )
    unit = match["unit"]
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f'invalid size "{text}": unknown unit "{unit}" (use {_UNIT_NAMES})')
    amount = Fraction(match["number"]) * multiplier
    if amount.denominator != 1:
        raise ValueError(f'invalid size "{text}": not a whole number of bytes')
    return int(amount)


def format_size(n: int) -> str:
    """Render ``n`` bytes for humans with the largest binary unit that fits (``"8.0MiB"``).

    One decimal keeps messages short; it is for display, not for round-tripping exactly.
    """
    for unit, factor in _BINARY_DESCENDING:
        if abs(n) >= factor:
            return f"{n / factor:.1f}{unit}"
    return f"{n}B"
