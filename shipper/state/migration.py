"""Converting a state directory of the first format (before ``state.db``), once.

That format kept ``checkpoints.json`` (with a backup generation ``.1``) and
``ledger.jsonl``, one line per delivered object, never compacted. They are read
once, streaming the ledger line by line (its size is unbounded), into the state
database in one transaction; then the old files are removed.

Every checkpoint carries over as it was: offset, markers, ``finished``, when it
was last seen. A file the ledger names but the checkpoints had already
forgotten carries over only if it was delivered within ``checkpoint_grace_secs``
(a crash may have come before its checkpoint was saved), with the marker of its
last delivered end, so a reused inode is never taken for it. The rest is
history: its provenance is in the objects' metadata.
"""

from __future__ import annotations

__all__ = ["LEGACY_FILES", "MigrationReport", "migrate_legacy_state"]

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipper.files.durable import fsync_dir
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker
from shipper.state.delivered import ShippedFile, ShippedIndex
from shipper.state.statedb import StateDB, Totals
from shipper.tail.checkpoints import CheckpointStore

log = logging.getLogger(__name__)

#: The first format's files, removed once converted.
LEGACY_FILES = (
    "checkpoints.json",
    "checkpoints.json.1",
    ".checkpoints.json.tmp",
    "ledger.jsonl",
)
_LEDGER = "ledger.jsonl"
_LEDGER_VERSION = 1
#: A file's ranges not joined as they came (deliveries out of order) are merged past this.
_MERGE_EVERY = 1024


@dataclass(frozen=True, slots=True)
class MigrationReport:
    checkpoints: int
    ledger_lines: int
    unreadable_lines: int
    #: Files named only by the ledger, delivered within the grace: kept.
    recent_from_ledger: int
    #: Files named only by the ledger and gone for longer: dropped.
    forgotten_from_ledger: int
    files_shipped: int


def migrate_legacy_state(
    state_dir: Path, db: StateDB, *, grace_secs: float, now: float
) -> MigrationReport | None:
    """Convert the first format's files into ``db``; None if there are none."""
    present = [state_dir / name for name in LEGACY_FILES if (state_dir / name).exists()]
    if not present:
        return None
    if not db.is_empty:
        # Converted already; a crash came before the old files were removed.
        _remove(state_dir, present)
        return None
    checkpoints = CheckpointStore(state_dir / "checkpoints.json").load()
    folding: dict[str, _Folding] = {}
    lines = unreadable = stored = records = 0
    for line_no, record in _ledger_records(state_dir / _LEDGER):
        lines += 1
        try:
            records += _fold(record, folding)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            unreadable += 1
            log.error(
                "unreadable ledger line skipped",
                extra={"path": str(state_dir / _LEDGER), "line": line_no, "reason": str(exc)},
            )
            continue
        stored += record.get("outcome") == "stored"
    totals = Totals(stored, lines - unreadable - stored, records)
    shipped = ShippedIndex()
    shipped.put(f.shipped() for f in folding.values())
    del folding
    cutoff = now - grace_secs
    recent = forgotten = 0
    for file in list(shipped):
        fid = file.fingerprint.id
        if fid in checkpoints:
            continue
        if file.delivered_at < cutoff:
            shipped.forget([fid])
            forgotten += 1
            continue
        recent += 1
        checkpoints[fid] = file.as_checkpoint()
    db.replace_all(checkpoints.values(), shipped, totals)
    _remove(state_dir, present)
    report = MigrationReport(
        checkpoints=len(checkpoints),
        ledger_lines=lines,
        unreadable_lines=unreadable,
        recent_from_ledger=recent,
        forgotten_from_ledger=forgotten,
        files_shipped=sum(1 for _ in shipped),
    )
    log.info("state directory converted to the state database", extra=asdict(report))
    return report


def _ledger_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each complete line's JSON object; a torn last line (a crash mid-append) is dropped."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                log.warning(
                    "dropping torn last ledger line", extra={"path": str(path), "line": line_no}
                )
                return
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                log.error(
                    "unreadable ledger line skipped",
                    extra={"path": str(path), "line": line_no, "reason": str(exc)},
                )
                continue
            if isinstance(record, dict):
                yield line_no, record


@dataclass(slots=True)
class _Folding:
    """One file's deliveries as the ledger is read: consecutive ranges joined as they come."""

    fingerprint: Fingerprint
    source: str
    path: str
    delivered_at: float
    ranges: list[tuple[int, int]] = field(default_factory=list)
    end_marker: Marker | None = None

    def add(self, start: int, end: int) -> None:
        if self.ranges and self.ranges[-1][1] == start:
            self.ranges[-1] = (self.ranges[-1][0], end)
            return
        self.ranges.append((start, end))
        if len(self.ranges) > _MERGE_EVERY:
            self.ranges = self.shipped().ranges  # deliveries out of order: merge now

    def shipped(self) -> ShippedFile:
        file = ShippedFile(self.fingerprint, source=self.source, path=self.path)
        for start, end in sorted(self.ranges):
            file.add(start, end, None)
        marker = self.end_marker
        file.end_marker = marker if marker is not None and marker.end == file.end else None
        file.delivered_at = self.delivered_at
        return file


def _fid(segment: dict[str, Any]) -> str:
    """The id stored beside the fingerprint: computing it (a hash) for every line is slow."""
    fingerprint = segment["fingerprint"]
    return str(fingerprint.get("id") or Fingerprint.from_json(fingerprint).id)


def _fold(record: dict[str, Any], files: dict[str, _Folding]) -> int:
    """Fold one ledger line into ``files``; the records it counted."""
    if record.get("v") != _LEDGER_VERSION:
        raise ValueError(f"unsupported ledger version {record.get('v')!r}")
    segments = record["segments"]
    if record.get("kind", "batch") != "batch" or not segments:
        return int(record.get("records", 0))  # a gap record: nothing was delivered
    source, delivered_at = str(record["source"]), float(record.get("delivered_at", 0.0))
    for segment in segments:
        fid = _fid(segment)
        file = files.get(fid)
        if file is None:
            fingerprint = Fingerprint.from_json(segment["fingerprint"])
            file = files[fid] = _Folding(fingerprint, source, str(segment["path"]), delivered_at)
        start, end = int(segment["start"]), int(segment["end"])
        if end > start:
            file.add(start, end)
        file.source, file.path = source, str(segment["path"])
        file.delivered_at = max(file.delivered_at, delivered_at)
    marker = record.get("end_marker")
    if marker is not None:  # of the entry's end: its last segment's
        end_marker = Marker.from_json(marker)
        last = files[_fid(segments[-1])]
        if last.end_marker is None or end_marker.end >= last.end_marker.end:
            last.end_marker = end_marker
    return int(record.get("records", 0))


def _remove(state_dir: Path, paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    fsync_dir(state_dir)
