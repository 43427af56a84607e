"""Index entries holding one item, or a tuple of several when keys collide.

Nearly every key of the file indexes (by inode, by first line) has one file: a
tuple for each would cost 64 bytes per indexed file, so a lone item is stored as
itself. Items must not be tuples.
"""

from __future__ import annotations

__all__ = ["OneOrMore", "add", "drop", "members"]

from typing import TypeAlias, TypeVar

K = TypeVar("K")
T = TypeVar("T")
OneOrMore: TypeAlias = "T | tuple[T, ...]"


def members(entry: OneOrMore[T]) -> tuple[T, ...]:
    """The items of an entry."""
    return entry if isinstance(entry, tuple) else (entry,)


def add(index: dict[K, OneOrMore[T]], key: K, item: T) -> None:
    """``item`` added under ``key``, after those there."""
    entry = index.get(key)
    index[key] = item if entry is None else (*members(entry), item)


def drop(index: dict[K, OneOrMore[T]], key: K, item: T) -> None:
    """``item`` taken from under ``key`` (the key goes with its last item)."""
    entry = index.get(key)
    if entry is None:
        return
    left = tuple(x for x in members(entry) if not (x is item or x == item))
    if not left:
        del index[key]
    else:
        index[key] = left[0] if len(left) == 1 else left
