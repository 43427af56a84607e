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
from collections.abc import Iterable
from dataclasses import dataclass, field

from shipper.ledger import LedgerRecord
from shipper.sources.fingerprint import Fingerprint
from shipper.sources.markers import Marker
from shipper.spool import SpoolEntry


@dataclass(slots=True)
class ShippedFile:
    fingerprint: Fingerprint
    #: Delivered ranges, sorted and merged: ``[start, end)`` pairs that do not touch.
    ranges: list[tuple[int, int]] = field(default_factory=list)
    #: The marker of the furthest delivered end.
    end_marker: Marker | None = None

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
    """Delivered ranges by fingerprint id, from the ledger and each delivery since."""

    def __init__(self) -> None:
        self._files: dict[str, ShippedFile] = {}
        #: Fingerprint ids by (head length, head SHA-256): finds the file a compressed
        #: rotation holds, whatever inode it now has.
        self._by_head: dict[tuple[int, str], list[str]] = {}
        # Deliveries add on the event loop while retention reads in a thread.
        self._lock = threading.Lock()

    def get(self, fid: str) -> ShippedFile | None:
        return self._files.get(fid)

    def load(self, records: Iterable[LedgerRecord]) -> None:
        for record in records:
            if record.kind == "batch":
                segment = record.segment
                self._add(segment.fingerprint, segment.start, segment.end, record.end_marker)

    def add_entry(self, entry: SpoolEntry) -> None:
        """A delivered entry; gap records prove nothing shipped and are skipped."""
        if entry.kind != "batch":
            return
        for i, segment in enumerate(entry.segments):
            last = i == len(entry.segments) - 1
            marker = entry.end_marker if last else None
            self._add(segment.fingerprint, segment.start, segment.end, marker)

    def with_head(self, head: bytes) -> list[ShippedFile]:
        """Files whose first bytes ``head`` starts with (``head`` as long as the longest)."""
        found: list[ShippedFile] = []
        with self._lock:
            for length in sorted({length for length, _ in self._by_head}):
                if len(head) < length:
                    continue
                digest = hashlib.sha256(head[:length]).hexdigest()
                found += [self._files[fid] for fid in self._by_head.get((length, digest), ())]
        return found

    @property
    def longest_head(self) -> int:
        with self._lock:
            return max((length for length, _ in self._by_head), default=0)

    def _add(self, fingerprint: Fingerprint, start: int, end: int, marker: Marker | None) -> None:
        fid = fingerprint.id
        with self._lock:
            shipped = self._files.get(fid)
            if shipped is None:
                shipped = self._files[fid] = ShippedFile(fingerprint)
                head = (fingerprint.head_len, fingerprint.head_sha256)
                self._by_head.setdefault(head, []).append(fid)
            shipped.add(start, end, marker)
