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
    ) -> NdjsonRecords:
        """Process one file's lines; ``stream`` names the file, ``start`` is where they begin."""
        out = NdjsonRecords()
        counters = self.counters
        flags_field = self.flags_field
        sampler = self.sampler
        offset = start
        # The lines that need the redactor's full search (None: all of them). When
        # enrichment adds something that needs it, every record does.
        search = None
        if self.redactor is not None and self._added_is_clean and self._path_is_clean(path):
            search = self.redactor.lines_to_search(lines)
        for index, (line, end) in enumerate(zip(lines, ends, strict=True)):
            line_start, offset = offset, end
            record, flags = parse_line(line)
            counters[flags[0] if flags else "parsed"] += 1
            if line_flags and index in line_flags:
                for flag in line_flags[index]:
                    counters[flag] += 1
                flags = [*flags, *line_flags[index]]
            when = record_time(record, read_time, self.timestamp_fields)
            # A plain-text line (not JSON read leniently, which is a record like any).
            text = bool(flags) and flags[0] in _TEXT_FLAGS and "nonstandard_json" not in flags
            if sampler is not None and not sampler.keep(record, line, when, text=text):
                if self.redactor is not None:
                    self.redactor.follow(stream, record, text=text)  # a key block it opens
                out.skip(end, when)
                continue
            try:
                record = self._enrich_and_redact(
                    record,
                    stream,
                    path,
                    line_start,
                    text=text,
                    clean=search is not None and index not in search,
                )
            except DropRecord:
                counters["dropped"] += 1
                out.skip(end, when)
                continue
            if flags:
                record.setdefault(flags_field, flags)
            out.add(self._encode(record, flags), end, when)
            if sampler is not None:
                for summary in sampler.summaries(when):
                    made = self._enrich_and_redact(summary, None, path, line_start, text=False)
                    out.add(self._encode(made, []), end, when, lines=0)
        return out

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
