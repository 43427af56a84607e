"""Adds ``host`` and the static ``enrich.fields`` without overwriting the application's fields."""

from __future__ import annotations

__all__ = ["Enrich"]

from collections import Counter
from collections.abc import Mapping
from typing import Any


class Enrich:
    """On a collision the application's value stays; ours goes under ``collision_prefix``."""

    def __init__(
        self,
        fields: Mapping[str, Any],
        *,
        collision_prefix: str,
        counters: Counter[str],
    ) -> None:
        self.fields = tuple(fields.items())
        self.collision_prefix = collision_prefix
        self.counters = counters

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        for name, value in self.fields:
            if name not in record:
                record[name] = value
            else:
                self.counters["enrich_collision"] += 1
                record[self.collision_prefix + name] = value
        return record
