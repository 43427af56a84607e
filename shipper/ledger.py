"""The ledger: an append-only, fsynced record of every delivered byte range.

One JSON line per delivered batch. It is what retention and audit read to know
what is shipped, and one of the three ends a file resumes from after a crash.
"""

from __future__ import annotations

__all__ = ["Ledger", "LedgerRecord"]

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shipper.sources.markers import Marker
from shipper.spool import Segment, SpoolEntry

log = logging.getLogger(__name__)

LEDGER_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    key: str
    source: str
    segment: Segment
    #: The checksum of the source bytes before the segment's end: with it, a file
    #: found later can be proven to hold exactly what was shipped (retention).
    end_marker: Marker | None = None
    #: "batch", or "gap": the record of a range deleted unshipped, not a delivery of it.
    kind: str = "batch"


class Ledger:
    """Owns ``state_dir/ledger.jsonl``. Methods block on disk I/O: call them from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> list[LedgerRecord]:
        """Drop a torn last line (a crash mid-append), then return every record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records: list[LedgerRecord] = []
        if self.path.exists():
            data = self.path.read_bytes()
            complete = data.rfind(b"\n") + 1
            if complete != len(data):
                log.warning(
                    "dropping torn last ledger line",
                    extra={"path": str(self.path), "byte_offset": complete},
                )
                os.truncate(self.path, complete)
            for line_no, line in enumerate(data[:complete].splitlines(), start=1):
                try:
                    records.extend(_parse(line))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                    log.error(
                        "unreadable ledger line skipped",
                        extra={"path": str(self.path), "line": line_no, "reason": str(exc)},
                    )
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return records

    def append(self, entry: SpoolEntry, *, outcome: str) -> None:
        """Record ``entry`` as delivered and make that durable before returning."""
        assert self._fd is not None, "ledger not opened"
        record: dict[str, Any] = {
            "v": LEDGER_FORMAT_VERSION,
            "key": entry.key,
            "source": entry.source,
            "segments": [s.to_json() for s in entry.segments],
            "records": entry.records,
            "body_sha256": entry.body_sha256,
            "uncompressed_bytes": entry.uncompressed_bytes,
            "outcome": outcome,
            "delivered_at": time.time(),
        }
        if entry.end_marker is not None:
            record["end_marker"] = entry.end_marker.to_json()
        if entry.kind != "batch":
            record["kind"] = entry.kind
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(self._fd)
        except OSError:
            # Take back a torn line (disk full), so the retry's line starts on its own.
            os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse(line: bytes) -> Iterator[LedgerRecord]:
    data: dict[str, Any] = orjson.loads(line)
    segments = data["segments"]
    marker = data.get("end_marker")
    for i, segment in enumerate(segments):
        yield LedgerRecord(
            key=str(data["key"]),
            source=str(data["source"]),
            segment=Segment.from_json(segment),
            # The marker is of the entry's end: the last segment's.
            end_marker=Marker.from_json(marker) if marker and i == len(segments) - 1 else None,
            kind=str(data.get("kind", "batch")),
        )
