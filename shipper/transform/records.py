"""A chunk of encoded records: what the chain hands to the batcher."""

from __future__ import annotations

__all__ = ["NdjsonRecords"]

from dataclasses import dataclass, field
from typing import Any

from shipper.transform.parse import TIMESTAMP_FIELDS, record_time


@dataclass(slots=True)
class NdjsonRecords:
    #: NDJSON: every record encoded and newline-terminated, back to back.
    data: bytearray = field(default_factory=bytearray)
    #: Where each entry ends in ``data``. An entry of no bytes is a dropped line
    #: (sampled out): it holds no record, but its batch's range still covers it.
    bounds: list[int] = field(default_factory=list)
    #: The file offset just past each entry's last input line. A record made by the
    #: shipper (a summary) shares the end of the line it follows.
    ends: list[int] = field(default_factory=list)
    #: Each entry's time (its own timestamp, or when it was read); see :meth:`time_at`.
    #: An entry of the chain's short way holds the values of the record's time
    #: fields instead (a tuple), made a time only when asked: only the first record
    #: of a batch needs one, and parsing every record's cost a tenth of the chain.
    times: list[float | tuple[Any, ...]] = field(default_factory=list)
    #: When the chunk was read, and the fields a record's time is read from.
    read_time: float = 0.0
    time_fields: tuple[str, ...] = TIMESTAMP_FIELDS
    #: Input records each entry stands for: 1, or 0 for a record made by the shipper.
    lines: list[int] = field(default_factory=list)
    #: Every entry so far is one line's record of some bytes (none dropped, none of
    #: the shipper's own): the batcher can then cut the chunk by its bounds alone.
    plain: bool = True

    def __len__(self) -> int:
        return len(self.bounds)

    def time_at(self, index: int) -> float:
        """Entry ``index``'s time: its record's own, else when it was read."""
        when = self.times[index]
        if isinstance(when, tuple):
            fields = self.time_fields
            when = record_time(dict(zip(fields, when, strict=True)), self.read_time, fields)
            self.times[index] = when
        return when

    def add(
        self, encoded: bytes, end: int, when: float | tuple[Any, ...], *, lines: int = 1
    ) -> None:
        # Appended to one buffer at once: orjson's result over-allocates, and keeping
        # thousands of them alive would cost several times the data's size.
        self.data += encoded
        self.bounds.append(len(self.data))
        self.ends.append(end)
        self.times.append(when)
        self.lines.append(lines)
        if lines != 1 or not encoded:
            self.plain = False

    def skip(self, end: int, when: float) -> None:
        """A dropped line: no bytes, but the range moves past it."""
        self.add(b"", end, when)
