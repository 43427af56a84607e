"""What the ledger proves shipped, per file: the byte ranges delivered, merged.

Retention and the disk guard delete a file only when this index shows every
byte of it delivered, from byte 0 to its end, and the file still holds the
bytes that were shipped: same first line, and the same checksum before the
end (the ledger keeps the marker of each delivered batch's end).
"""

from __future__ import annotations

__all__ = ["ShippedFile", "ShippedIndex"]

import bisect
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker
from shipper.files.one_or_more import OneOrMore, add, drop, members
from shipper.spool.entry import SpoolEntry
from shipper.tail.checkpoints import Checkpoint


@dataclass(slots=True)
class ShippedFile:
    fingerprint: Fingerprint
    #: Delivered ranges, sorted and merged: ``[start, end)`` pairs that do not touch.
    ranges: list[tuple[int, int]] = field(default_factory=list)
    #: The marker of the furthest delivered end.
    end_marker: Marker | None = None
    #: The source and path of the last delivery: enough to know the file again from
    #: this alone, should its checkpoint not have been saved yet (a crash).
    source: str = ""
    path: str = ""
    #: When the last delivery was recorded (wall clock).
    delivered_at: float = 0.0

    @property
    def end(self) -> int:
        """The furthest delivered byte (0: none)."""
        return self.ranges[-1][1] if self.ranges else 0

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` is delivered."""
        at = bisect.bisect_right(self.ranges, (start, 2**63)) - 1
        return at >= 0 and self.ranges[at][0] <= start and end <= self.ranges[at][1]

    def as_checkpoint(self) -> Checkpoint:
        """Where the file resumes when only its deliveries know it (a crash before its
        checkpoint was saved): at its delivered end, with the marker of that end, so a
        reused inode is never taken for it, and as last seen at its last delivery, so it
        is forgotten in time if it is gone."""
        marker = self.end_marker
        return Checkpoint(
            self.fingerprint,
            self.source,
            self.path,
            self.end,
            seen_at=self.delivered_at,
            markers=() if marker is None or marker.end != self.end else (marker,),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint.to_json(),
            "ranges": self.ranges,
            "end_marker": None if self.end_marker is None else self.end_marker.to_json(),
            "source": self.source,
            "path": self.path,
            "delivered_at": self.delivered_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShippedFile:
        ranges = [(int(start), int(end)) for start, end in data["ranges"]]
        if any(end <= start for start, end in ranges) or ranges != sorted(ranges):
            raise ValueError(f"ranges not sorted and non-empty: {ranges!r}")
        marker = data.get("end_marker")
        return cls(
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            ranges=ranges,
            end_marker=None if marker is None else Marker.from_json(marker),
            source=str(data.get("source", "")),
            path=str(data.get("path", "")),
            delivered_at=float(data.get("delivered_at", 0.0)),
        )

    @property
    def shipped_from_zero(self) -> int:
        """How far the file is delivered without a hole from byte 0 (0: not at all)."""
        if not self.ranges or self.ranges[0][0] != 0:
            return 0
        return self.ranges[0][1]

    def add(self, start: int, end: int, end_marker: Marker | None) -> None:
        if end <= start:
            return
        newest = self.end_marker is None or end >= self.end_marker.end
        if end_marker is not None and end_marker.end == end and newest:
            self.end_marker = end_marker
        at = bisect.bisect_left(self.ranges, (start, end))
        # Merge with every neighbour it touches or overlaps.
        lo = at
        while lo > 0 and self.ranges[lo - 1][1] >= start:
            lo -= 1
        hi = at
        while hi < len(self.ranges) and self.ranges[hi][0] <= end:
            hi += 1
        merged = self.ranges[lo:hi]
        if merged:
            start = min(start, merged[0][0])
            end = max(end, *(r[1] for r in merged))
        self.ranges[lo:hi] = [(start, end)]

    def proves(self, length: int) -> Marker | None:
        """The marker that must match a file of ``length`` bytes for it to be shipped whole.

        None when the ledger cannot prove it: a hole, a shorter delivery, or no
        marker at exactly that end (the file would have to be longer or shorter).
        """
        if length <= 0 or self.shipped_from_zero < length:
            return None
        marker = self.end_marker
        return marker if marker is not None and marker.end == length else None


class ShippedIndex:
    """Delivered ranges by fingerprint id, from the state database and each delivery since."""

    def __init__(self) -> None:
        self._files: dict[str, ShippedFile] = {}
        #: Fingerprint ids by head SHA-256 (one id, or several): finds the file a
        #: compressed rotation holds, whatever inode it now has. Built when retention
        #: first asks, kept up to date after: with 100,000 files known it holds
        #: 5 MiB, and only retention's surveys of compressed files need it.
        self._by_head: dict[str, OneOrMore[str]] | None = None
        #: How many files have each head length (a few lengths at most).
        self._head_lengths: Counter[int] = Counter()
        # Deliveries add on the event loop while retention reads in a thread.
        self._lock = threading.Lock()

    def get(self, fid: str) -> ShippedFile | None:
        return self._files.get(fid)

    def __iter__(self) -> Iterator[ShippedFile]:
        with self._lock:
            return iter(list(self._files.values()))

    def load(self, files: Iterable[ShippedFile]) -> None:
        self.put(files)

    def merged_with(self, entry: SpoolEntry, *, now: float | None = None) -> list[ShippedFile]:
        """Copies of the files ``entry`` delivers bytes of, with its ranges added.

        The index itself is not changed: ``put`` them once they are durable. Gap
        records prove nothing shipped and give nothing.
        """
        if entry.kind != "batch":
            return []
        now = time.time() if now is None else now
        merged: dict[str, ShippedFile] = {}
        with self._lock:
            for i, segment in enumerate(entry.segments):
                fid = segment.fingerprint.id
                shipped = merged.get(fid)
                if shipped is None:
                    known = self._files.get(fid)
                    shipped = (
                        ShippedFile(segment.fingerprint)
                        if known is None
                        else replace(known, ranges=list(known.ranges))
                    )
                    merged[fid] = shipped
                last = i == len(entry.segments) - 1
                marker = segment.end_marker or (entry.end_marker if last else None)
                shipped.add(segment.start, segment.end, marker)
                shipped.source, shipped.path, shipped.delivered_at = entry.source, segment.path, now
        return list(merged.values())

    def add_entry(self, entry: SpoolEntry) -> None:
        """Merge a delivered entry in at once (no durable record between)."""
        self.put(self.merged_with(entry))

    def put(self, files: Iterable[ShippedFile]) -> None:
        with self._lock:
            for shipped in files:
                fp = shipped.fingerprint
                if fp.id not in self._files:
                    if self._by_head is not None:
                        add(self._by_head, fp.head_sha256, fp.id)
                    self._head_lengths[fp.head_len] += 1
                self._files[fp.id] = shipped

    def forget(self, fids: Iterable[str]) -> None:
        """Drop files that are gone (their state rows are deleted with their checkpoints)."""
        with self._lock:
            for fid in fids:
                shipped = self._files.pop(fid, None)
                if shipped is None:
                    continue
                fp = shipped.fingerprint
                if self._by_head is not None:
                    drop(self._by_head, fp.head_sha256, fid)
                self._head_lengths[fp.head_len] -= 1
                if self._head_lengths[fp.head_len] <= 0:
                    del self._head_lengths[fp.head_len]

    def with_head(self, head: bytes) -> list[ShippedFile]:
        """Files whose first bytes ``head`` starts with (``head`` as long as the longest)."""
        found: list[ShippedFile] = []
        with self._lock:
            by_head = self._by_head
            if by_head is None:
                by_head = self._by_head = {}
                for shipped in self._files.values():
                    add(by_head, shipped.fingerprint.head_sha256, shipped.fingerprint.id)
            for length in sorted(self._head_lengths):
                if len(head) < length:
                    continue
                digest = hashlib.sha256(head[:length]).hexdigest()
                for fid in members(by_head.get(digest, ())):
                    if self._files[fid].fingerprint.head_len == length:
                        found.append(self._files[fid])
        return found

    @property
    def longest_head(self) -> int:
        with self._lock:
            return max(self._head_lengths, default=0)
