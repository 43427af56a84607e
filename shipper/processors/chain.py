"""The record chain: parse, then a list of processors, then NDJSON encoding.

Processors share one signature, ``(record) -> record``. A processor that
drops a record raises :class:`DropRecord`; the chain catches it in one place.
The chain works on whole chunks of lines so a worker could run it unchanged.
"""

from __future__ import annotations

__all__ = ["Chain", "DropRecord", "Processor", "Record"]

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from shipper.processors.encoded import EncodedRecords
from shipper.processors.parse import parse_line, record_time

Record = dict[str, Any]
Processor = Callable[[Record], Record]


class DropRecord(Exception):
    """Raised by a processor to drop the record it was given (sampling)."""


class Chain:
    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        flags_field: str,
        counters: Counter[str] | None = None,
    ) -> None:
        self.processors = tuple(processors)
        self.flags_field = flags_field
        #: Outcome counters (parsed, wrapped, invalid_utf8, dropped, ...), shared with the
        #: processors that count their own outcomes; exposed to metrics.
        self.counters: Counter[str] = Counter() if counters is None else counters

    def run(
        self,
        lines: list[bytes],
        ends: list[int],
        *,
        read_time: float,
        line_flags: Mapping[int, tuple[str, ...]] | None = None,
    ) -> EncodedRecords:
        out = EncodedRecords()
        data = out.data
        counters = self.counters
        dumps = orjson.dumps
        flags_field = self.flags_field
        for index, (line, end) in enumerate(zip(lines, ends, strict=True)):
            record, flags = parse_line(line)
            counters[flags[0] if flags else "parsed"] += 1
            if line_flags and index in line_flags:
                for flag in line_flags[index]:
                    counters[flag] += 1
                flags = [*flags, *line_flags[index]]
            try:
                for processor in self.processors:
                    record = processor(record)
            except DropRecord:
                counters["dropped"] += 1
                continue
            if flags:
                record.setdefault(flags_field, flags)
            try:
                encoded = dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            except (TypeError, orjson.JSONEncodeError):
                # Parsed but not encodable (nested deeper than the encoder goes): ship
                # the line as text rather than lose it or stop on it.
                counters["unencodable"] += 1
                text = line.decode("utf-8", "replace")
                record = {"message": text, flags_field: [*flags, "unencodable"]}
                encoded = dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            # Appended to one buffer at once: orjson's result over-allocates, and keeping
            # thousands of them alive would cost several times the data's size.
            data += encoded
            out.bounds.append(len(data))
            out.ends.append(end)
            out.times.append(record_time(record, read_time))
        return out
