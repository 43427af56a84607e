"""A chunk of encoded records: what the chain hands to the batcher."""

from __future__ import annotations

__all__ = ["EncodedRecords"]

from dataclasses import dataclass, field


@dataclass(slots=True)
class EncodedRecords:
    #: NDJSON: every record encoded and newline-terminated, back to back.
    data: bytearray = field(default_factory=bytearray)
    #: Where each record ends in ``data``.
    bounds: list[int] = field(default_factory=list)
    #: The file offset just past each record's last input line.
    ends: list[int] = field(default_factory=list)
    #: Each record's time (its own timestamp, or when it was read).
    times: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.bounds)
