"""A chunk of encoded records: what the chain hands to the batcher."""

from __future__ import annotations

__all__ = ["NdjsonRecords"]

from dataclasses import dataclass, field


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
    #: Each entry's time (its own timestamp, or when it was read).
    times: list[float] = field(default_factory=list)
    #: Input records each entry stands for: 1, or 0 for a record made by the shipper.
    lines: list[int] = field(default_factory=list)
    #: Every entry so far is one line's record of some bytes (none dropped, none of
    #: the shipper's own): the batcher can then cut the chunk by its bounds alone.
    plain: bool = True

    def __len__(self) -> int:
        return len(self.bounds)

    def add(self, encoded: bytes, end: int, when: float, *, lines: int = 1) -> None:
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
