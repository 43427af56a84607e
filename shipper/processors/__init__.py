"""Record processing: parse, then enrich (redaction and sampling join here later)."""

from __future__ import annotations

__all__ = ["Chain", "DropRecord", "build_chain"]

from collections import Counter

from shipper.config import EnrichSettings
from shipper.processors.chain import Chain, DropRecord
from shipper.processors.enrich import Enrich


def build_chain(enrich: EnrichSettings, *, host: str) -> Chain:
    static: dict[str, object] = {"host": host} if enrich.host else {}
    static.update(enrich.fields)
    counters: Counter[str] = Counter()
    return Chain(
        [Enrich(static, collision_prefix=enrich.collision_prefix, counters=counters)],
        flags_field=enrich.collision_prefix + "flags",
        counters=counters,
    )
