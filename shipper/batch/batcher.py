"""Cuts one file's records into batches by bytes, records and age.

A batch covers one contiguous byte range of one file; that range, with the
file's fingerprint, names the batch (and its object key) for ever after.
"""

from __future__ import annotations

__all__ = ["Batch", "BatchLimits", "Batcher"]

import bisect
from dataclasses import dataclass, field

from shipper.files.fingerprint import Fingerprint
from shipper.transform.records import NdjsonRecords


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_bytes: int
    max_records: int
    max_age_secs: float


@dataclass(slots=True)
class Batch:
    source: str
    fingerprint: Fingerprint
    path: str
    #: File offsets ``[start, end)`` this batch covers, every byte of them.
    start: int
    end: int
    #: The NDJSON body: encoded records, each ending with a newline. One growing buffer,
    #: not a list of small objects, so memory is the body's size and no more.
    body: bytearray = field(default_factory=bytearray)
    #: Records in the body.
    records: int = 0
    #: Input records the range holds: the records, less those the shipper made (cap
    #: summaries), plus those sampled out. A multiline record counts once.
    lines: int = 0
    #: Time of the first record (its own timestamp, else when it was read): partitions the key.
    first_time: float = 0.0
    #: Monotonic time the first record arrived, for the age limit.
    opened_at: float = 0.0


class Batcher:
    """Accumulates one file's records; returns batches as they become full."""

    def __init__(
        self,
        limits: BatchLimits,
        *,
        source: str,
        fingerprint: Fingerprint,
        path: str,
        position: int,
    ) -> None:
        self.limits = limits
        self.source = source
        self.fingerprint = fingerprint
        self.path = path
        self._open: Batch | None = None
        #: End of the last byte accepted; the next batch starts here.
        self.position = position

    @property
    def pending(self) -> Batch | None:
        return self._open

    def add(self, records: NdjsonRecords, now: float) -> list[Batch]:
        """Add a chunk's encoded records; return the batches that became full."""
        if records.plain:
            return self._add_plain(records, now)
        return self.add_each(records, now)

    def _add_plain(self, records: NdjsonRecords, now: float) -> list[Batch]:
        """``add_each`` for a chunk of one record per line and no empty entries (the
        common case): cut where the byte and record limits fall, found by bisection
        on the records' bounds, instead of a step per record."""
        cut: list[Batch] = []
        limits = self.limits
        data = memoryview(records.data)
        bounds = records.bounds
        count = len(bounds)
        taken = 0  # records of the chunk in batches so far
        while taken < count:
            batch = self._open
            base = bounds[taken - 1] if taken else 0
            if batch is not None and (
                len(batch.body) + bounds[taken] - base > limits.max_bytes
                or batch.records >= limits.max_records
            ):
                cut.append(batch)
                self._open = batch = None
            if batch is None:
                batch = self._open = self._new_batch(records.time_at(taken), now)
                # A new batch takes its first record whatever its size.
                room = max(limits.max_bytes - len(batch.body), bounds[taken] - base)
            else:
                room = limits.max_bytes - len(batch.body)
            # The records that fit: up to the last bound within ``room`` of ``base``.
            fits = bisect.bisect_right(bounds, base + room, taken, count) - taken
            fits = min(fits, limits.max_records - batch.records)
            upto = taken + fits
            batch.body += data[base : bounds[upto - 1]]
            batch.records += fits
            batch.lines += fits
            batch.end = self.position = records.ends[upto - 1]
            taken = upto
        batch = self._open
        if batch is not None and (
            len(batch.body) >= limits.max_bytes or batch.records >= limits.max_records
        ):
            cut.append(batch)
            self._open = None
        return cut

    def add_each(self, records: NdjsonRecords, now: float) -> list[Batch]:
        """``add``, a record at a time: for chunks with dropped lines or records the
        shipper made (their entries share a line's end, or hold no bytes)."""
        cut: list[Batch] = []
        limits = self.limits
        data = memoryview(records.data)
        run_start = 0  # start in ``data`` of the records not yet copied into a batch
        previous = 0
        entries = zip(records.bounds, records.ends, records.lines, strict=True)
        for index, (bound, end, lines) in enumerate(entries):
            size = bound - previous
            batch = self._open
            # A record the shipper made shares its line's end: never cut between them,
            # or the next batch would cover no bytes at all.
            if (
                batch is not None
                and end > batch.end
                and (
                    len(batch.body) + (previous - run_start) + size > limits.max_bytes
                    or batch.records >= limits.max_records
                )
            ):
                batch.body += data[run_start:previous]
                run_start = previous
                cut.append(batch)
                batch = None
            if batch is None:
                batch = self._open = self._new_batch(records.time_at(index), now)
            if size:
                batch.records += 1
            batch.lines += lines
            batch.end = end
            self.position = end
            previous = bound
        batch = self._open
        if batch is not None:
            batch.body += data[run_start:previous]
            if len(batch.body) >= limits.max_bytes or batch.records >= limits.max_records:
                cut.append(batch)
                self._open = None
        return cut

    def _new_batch(self, first_time: float, now: float) -> Batch:
        """An empty batch starting where the last one ended."""
        return Batch(
            source=self.source,
            fingerprint=self.fingerprint,
            path=self.path,
            start=self.position,
            end=self.position,
            first_time=first_time,
            opened_at=now,
        )

    def due(self, now: float) -> bool:
        """Whether the open batch has waited ``max_age_secs`` since its first record."""
        return self._open is not None and now - self._open.opened_at >= self.limits.max_age_secs

    def flush(self) -> Batch | None:
        """Take the open batch, however small (age limit, shutdown, finished file)."""
        batch, self._open = self._open, None
        return batch
