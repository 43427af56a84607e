"""The record chain: parse, sample, enrich, redact, then NDJSON encoding.

Sampling comes right after parsing: a sampled-out record never leaves the
host, so nothing is gained by enriching or redacting it first, and rules see
the record as the application wrote it. Redaction comes last, so it also
covers what enrichment added, and nothing after it can bring a secret back.

Processors share one signature, ``(record) -> record``. A processor that
drops a record raises :class:`DropRecord`; the chain catches it in one place.
A dropped line still moves its file's range on (an entry of no bytes), so a
batch covers every byte of its range whether or not each line was kept.
The chain works on whole chunks of lines so a worker could run it unchanged.
"""

from __future__ import annotations

__all__ = ["Chain", "DropRecord", "Processor", "Record"]

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from shipper.transform.enrich import Enrich
from shipper.transform.jsontext import dumps_any
from shipper.transform.parse import TIMESTAMP_FIELDS, parse_line, record_time
from shipper.transform.records import NdjsonRecords
from shipper.transform.redact.redactor import Redactor
from shipper.transform.sample import Sampler

Record = dict[str, Any]
Processor = Callable[[Record], Record]
_TEXT_FLAGS = ("wrapped", "invalid_utf8")


class DropRecord(Exception):
    """Raised by a processor to drop the record it was given."""


class Chain:
    def __init__(
        self,
        processors: Sequence[Processor] = (),
        *,
        flags_field: str,
        counters: Counter[str] | None = None,
        enrich: Enrich | None = None,
        redactor: Redactor | None = None,
        sampler: Sampler | None = None,
        timestamp_fields: Sequence[str] = TIMESTAMP_FIELDS,
    ) -> None:
        self.processors = tuple(processors)
        self.flags_field = flags_field
        #: Outcome counters (parsed, wrapped, invalid_utf8, sampled_out, redacted_*,
        #: ...), shared with the processors that count their own; exposed to metrics.
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.enrich = enrich
        self.redactor = redactor
        self.sampler = sampler
        self.timestamp_fields = tuple(timestamp_fields)
        #: Whether what enrichment adds to every record (names and values) is free of
        #: anything redaction would touch; then a clean raw line means a clean record.
        self._added_is_clean = (
            redactor is None
            or enrich is None
            or redactor.line_is_clean(dumps_any(enrich.added_names_and_values()))
        )
        self._clean_paths: dict[str, bool] = {}
        #: Whether a line may take the short way at all: sampling and extra
        #: processors look at every record.
        self._lean = sampler is None and not self.processors

    def run(
        self,
        lines: list[bytes],
        ends: list[int],
        *,
        read_time: float,
        line_flags: Mapping[int, tuple[str, ...]] | None = None,
        stream: str = "",
        path: str = "",
        start: int = 0,
        lean: bool = True,
    ) -> NdjsonRecords:
        """Process one file's lines; ``stream`` names the file, ``start`` is where they begin.

        Most lines take a short way (see :meth:`_lean_record`); ``lean=False`` sends
        every line the long way, which gives the same bytes (the tests compare them).
        """
        out = NdjsonRecords(read_time=read_time, time_fields=self.timestamp_fields)
        # The lines that need the redactor's full search (None: all of them). When
        # enrichment adds something that needs it, every record does.
        search = None
        redactor = self.redactor
        if redactor is not None and self._added_is_clean and self._path_is_clean(path):
            search = redactor.lines_to_search(lines)
        lean = lean and self._lean and (redactor is None or search is not None)
        # Streams inside a private key block: their lines are followed one by one.
        key_blocks = redactor.open_key_blocks if redactor is not None else {}
        offset = start
        short = 0
        for index, (line, end) in enumerate(zip(lines, ends, strict=True)):
            line_start, offset = offset, end
            # Ruled out by the pre-check: nothing in the line needs the redactor.
            clean = search is not None and index not in search
            if (
                lean
                and (clean or search is None)
                and (not line_flags or index not in line_flags)
                and stream not in key_blocks
            ):
                encoded = self._lean_record(line, path, line_start)
                if encoded is not None:
                    out.add(encoded[0], end, encoded[1])
                    short += 1
                    continue
            self._long_way(
                out,
                line,
                end,
                line_start,
                read_time=read_time,
                flags_of_line=line_flags.get(index) if line_flags else None,
                stream=stream,
                path=path,
                clean=clean,
            )
        self.counters["parsed"] += short
        return out

    def _lean_record(
        self, line: bytes, path: str, line_start: int
    ) -> tuple[bytes, tuple[Any, ...]] | None:
        """A JSON object line that needs no redaction, sampling or flags: parsed,
        enriched and encoded with nothing in between; None when it needs the long way
        (not an object, a name we add is taken, not encodable), with no side effect."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if type(record) is not dict:
            return None
        # The values its time is read from (when asked: NdjsonRecords.time_at), taken
        # before enrichment could add a field of such a name.
        when = tuple(map(record.get, self.timestamp_fields))
        enrich = self.enrich
        if enrich is not None and not enrich.added_all(record, path, line_start):
            return None
        try:
            encoded = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except (TypeError, orjson.JSONEncodeError):
            return None
        return encoded, when

    def _long_way(
        self,
        out: NdjsonRecords,
        line: bytes,
        end: int,
        line_start: int,
        *,
        read_time: float,
        flags_of_line: tuple[str, ...] | None,
        stream: str,
        path: str,
        clean: bool,
    ) -> None:
        """One line through every stage: parse, flags, sample, enrich, redact, encode."""
        counters = self.counters
        sampler = self.sampler
        record, flags = parse_line(line)
        counters[flags[0] if flags else "parsed"] += 1
        if flags_of_line:
            for flag in flags_of_line:
                counters[flag] += 1
            flags = [*flags, *flags_of_line]
        when = record_time(record, read_time, self.timestamp_fields)
        # A plain-text line (not JSON read leniently, which is a record like any).
        text = bool(flags) and flags[0] in _TEXT_FLAGS and "nonstandard_json" not in flags
        if sampler is not None and not sampler.keep(record, line, when, text=text):
            if self.redactor is not None:
                self.redactor.follow(stream, record, text=text)  # a key block it opens
            out.skip(end, when)
            return
        try:
            record = self._enrich_and_redact(
                record, stream, path, line_start, text=text, clean=clean
            )
        except DropRecord:
            counters["dropped"] += 1
            out.skip(end, when)
            return
        if flags:
            record.setdefault(self.flags_field, flags)
        out.add(self._encode(record, flags), end, when)
        if sampler is not None:
            for summary in sampler.summaries(when):
                made = self._enrich_and_redact(summary, None, path, line_start, text=False)
                out.add(self._encode(made, []), end, when, lines=0)

    def _enrich_and_redact(
        self,
        record: Record,
        stream: str | None,
        path: str,
        line_start: int,
        *,
        text: bool,
        clean: bool = False,
    ) -> Record:
        enrich = self.enrich
        if enrich is not None:
            record = enrich(record)
            enrich.add_source(record, path, line_start)
        for processor in self.processors:
            record = processor(record)
        if self.redactor is not None:
            record = self.redactor(
                record,
                text_stream=stream if text else None,
                json_stream=None if text else stream,
                clean=clean,
            )
        return record

    def _path_is_clean(self, path: str) -> bool:
        """Whether the file path enrichment adds to records needs no redaction."""
        if self.enrich is None or self.enrich.source_path_field is None or self.redactor is None:
            return True
        clean = self._clean_paths.get(path)
        if clean is None:
            if len(self._clean_paths) >= 4096:
                self._clean_paths.clear()
            clean = self._clean_paths[path] = self.redactor.line_is_clean(
                path.encode("utf-8", "surrogateescape")
            )
        return clean

    def _encode(self, record: Record, flags: list[str]) -> bytes:
        try:
            return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except (TypeError, orjson.JSONEncodeError):
            # Parsed but not encodable (nested deeper than orjson writes): ship the
            # redacted record as JSON text in a string, rather than lose it or stop.
            self.counters["unencodable"] += 1
            text = dumps_any(record).decode()
            wrapped: Record = {"message": text, self.flags_field: [*flags, "unencodable"]}
            return orjson.dumps(wrapped, option=orjson.OPT_APPEND_NEWLINE)
