"""Reading again the lines of a spool entry damaged on disk.

A damaged entry's lines were sealed, so their file's checkpoint has moved past
them. They are still in the file (or in its compressed rotation): the range is
found there by fingerprint, read again, and sealed as one new batch covering
exactly the same bytes. With the header intact, the batch keeps the record time
it had, so it gets the same object key: if the damaged entry had in fact been
stored before the crash, the store's 412 still makes the retry a no-op.
"""

from __future__ import annotations

__all__ = ["Hole", "Plan", "RefillError", "open_hole", "plan", "read_hole"]

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipper.batch.objectkey import is_gap_key
from shipper.errors import RefusedFileError, ShipperError
from shipper.files.confined import open_log_file
from shipper.files.durable import regular_files
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker, check_markers
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import CompressedFileTailer, find_compressed
from shipper.tail.decompress import is_compressed
from shipper.tail.tailer import FileTailer, LineChunk
from shipper.transform.redact.redactor import PEM_BEGIN_RE, PEM_END_RE, PEM_MAX_LINES


class CoveredRanges(Protocol):
    """One file's delivered ranges (``state.delivered.ShippedFile`` is one)."""

    def covers(self, start: int, end: int) -> bool: ...


class DeliveredRanges(Protocol):
    """What the ledger proves delivered, by fingerprint id (a ``ShippedIndex``)."""

    def get(self, fingerprint_id: str, /) -> CoveredRanges | None: ...


class RefillError(ShipperError):
    """The lines of a damaged entry cannot be read again (the file is gone or changed)."""


@dataclass(frozen=True, slots=True)
class Hole:
    """A byte range of a file whose only sealed copy was damaged."""

    damaged: DamagedEntry
    source: str
    fingerprint: Fingerprint
    path: str
    start: int
    end: int
    #: The batch's first record time from the damaged header: keeps its object key.
    first_time: float | None
    #: Checksums a file must match to hold this range: the one at its end from the
    #: header, else the file's checkpoint markers.
    markers: tuple[Marker, ...] = ()
    #: The damaged entry's key and codec, from its header.
    key: str | None = None
    codec: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    holes: list[Hole]
    #: Damaged entries with nothing to read again, and why (for the log).
    settled: list[tuple[DamagedEntry, str]]
    #: Damaged entries whose lines cannot be read again, and why.
    lost: list[tuple[DamagedEntry, str]]

    @property
    def pending(self) -> bool:
        return bool(self.holes or self.settled or self.lost)

    def extend(self, other: Plan) -> None:
        self.holes.extend(other.holes)
        self.settled.extend(other.settled)
        self.lost.extend(other.lost)


def plan(
    damaged: Iterable[DamagedEntry],
    known: Mapping[str, Checkpoint],
    spooled: Iterable[SpoolEntry],
    delivered: DeliveredRanges,
) -> Plan:
    """Sort damaged entries into ranges to read again, nothing to do, and lost.

    Nothing to do: the range was delivered (a crash came between the ledger and
    the spool), a good entry already covers exactly the range (an earlier
    refill), or the file's position is still at or before the range, so the
    reader reads it anyway.
    """
    ranges: set[tuple[str, int, int]] = set()
    for sealed in spooled:
        if sealed.kind != "batch":
            continue
        for s in sealed.segments:
            ranges.add((s.fingerprint.id, s.start, s.end))
    result = Plan([], [], [])
    for entry in damaged:
        if entry.key is not None and is_gap_key(entry.key):
            # Its lines were deleted: there is nothing to read again. The loss it
            # recorded is also in the daemon's log (ERROR) and its metrics.
            result.lost.append((entry, "a damaged gap record (lines deleted unshipped)"))
            continue
        if entry.unknown_files:
            result.lost.append(
                (
                    entry,
                    f"its header is damaged: the ranges of the {entry.unknown_files}"
                    " other files it held are not known",
                )
            )
        first = _Part(
            entry.fingerprint_id,
            entry.start,
            entry.end,
            entry.fingerprint,
            entry.file_path,
            entry.end_marker,
        )
        others = [
            _Part(s.fingerprint.id, s.start, s.end, s.fingerprint, s.path, s.end_marker)
            for s in entry.others
        ]
        for part in [first, *others]:
            _plan_part(result, entry, part, known=known, ranges=ranges, delivered=delivered)
    return result


@dataclass(frozen=True, slots=True)
class _Part:
    """One file's range in a damaged entry, as far as it is known."""

    fingerprint_id: str | None
    start: int | None
    end: int | None
    fingerprint: Fingerprint | None
    path: str | None
    end_marker: Marker | None


def _plan_part(
    result: Plan,
    entry: DamagedEntry,
    part: _Part,
    *,
    known: Mapping[str, Checkpoint],
    ranges: set[tuple[str, int, int]],
    delivered: DeliveredRanges,
) -> None:
    fid, start, end = part.fingerprint_id, part.start, part.end
    if fid is None or start is None or end is None:
        result.lost.append((entry, "neither its header nor its name is readable"))
        return
    shipped = delivered.get(fid)
    if shipped is not None and shipped.covers(start, end):
        result.settled.append((entry, "already delivered"))
        return
    if (fid, start, end) in ranges:
        result.settled.append((entry, "already read again"))
        return
    checkpoint = known.get(fid)
    fingerprint = part.fingerprint or (checkpoint.fingerprint if checkpoint else None)
    source = entry.source or (checkpoint.source if checkpoint else None)
    if fingerprint is None or source is None:
        result.lost.append((entry, f"its file {fid} is no longer known"))
        return
    offset = checkpoint.offset if checkpoint is not None else end
    if offset <= start:
        result.settled.append((entry, "the file's position is before the range"))
        return
    if offset < end:
        result.lost.append((entry, f"the file's position {offset} is inside the range"))
        return
    path = part.path or (checkpoint.path if checkpoint else "")
    if part.end_marker is not None:
        markers: tuple[Marker, ...] = (part.end_marker,)
    else:
        markers = checkpoint.markers if checkpoint else ()
    if not markers:
        result.lost.append((entry, f"nothing left to check {path} bytes against"))
        return
    result.holes.append(
        Hole(
            entry,
            source,
            fingerprint,
            path,
            start,
            end,
            entry.first_time,
            markers,
            entry.key,
            entry.codec,
        )
    )


def open_hole(
    hole: Hole, directories: Iterable[Path], *, chunk_bytes: int, max_line_bytes: int
) -> FileTailer:
    """A tailer at the start of the range, on a file that provably holds its bytes.

    Tried in order: the file at its last known path, any plain file in
    ``directories`` (the file renamed, or a copytruncate copy), then compressed
    rotations there. A file holds the range if it starts with the file's first
    line and matches its markers (the checksum at the range's end): another file
    with the same first line, or a rewrite of the same inode, does not.
    """
    places = sorted({Path(hole.path).parent, *directories})
    candidates = [hole.path]
    candidates += [p for p, _ in regular_files(places) if p != hole.path and not is_compressed(p)]
    for path in candidates:
        fd = _open_if_holds(path, hole)
        if fd is not None:
            return FileTailer(
                source=hole.source,
                path=path,
                fd=fd,
                fingerprint=hole.fingerprint,
                offset=hole.start,
                chunk_bytes=chunk_bytes,
                max_line_bytes=max_line_bytes,
            )
    wanted = Checkpoint(hole.fingerprint, hole.source, hole.path, hole.end, markers=hole.markers)
    for stream, _ in find_compressed(places, [wanted]):
        return CompressedFileTailer(
            stream=stream,
            source=hole.source,
            path=stream.path,
            fingerprint=hole.fingerprint,
            offset=hole.start,
            chunk_bytes=chunk_bytes,
            max_line_bytes=max_line_bytes,
        )
    raise RefillError(f"no file holds {hole.path} bytes {hole.start}-{hole.end} any more")


def _open_if_holds(path: str, hole: Hole) -> int | None:
    """An open descriptor on ``path`` if it provably holds the hole's bytes.

    A file that is gone or not readable is None; other errors (too many open
    files, I/O) are raised: they may pass, and the range is tried again later.
    """
    try:
        # Never a FIFO or a device. A symlink (Kubernetes' containers/ names) may be
        # followed anywhere: only a file holding the known file's bytes is read.
        fd = open_log_file(path, roots=("/",))
    except (FileNotFoundError, PermissionError, NotADirectoryError, RefusedFileError):
        return None
    try:
        size = os.fstat(fd).st_size
        fingerprint = hole.fingerprint

        def pread(length: int, offset: int) -> bytes:
            return os.pread(fd, length, offset)

        if (
            size >= hole.end
            and fingerprint.matches_head(pread(fingerprint.head_len, 0))
            and check_markers(hole.markers, pread) is True
        ):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


#: How far back the bytes before a range are searched for an open private key block.
KEY_BLOCK_LOOKBACK = 256 * 1024


def inside_key_block(tailer: FileTailer, start: int) -> bool:
    """Whether ``start`` lies inside a private key block that began before it.

    The redactor follows blocks line by line; a range read again from its middle
    must begin as the reader was then, or the block's lines would ship unredacted.
    """
    at = max(0, start - KEY_BLOCK_LOOKBACK)
    before = tailer.pread(start - at, at).decode("utf-8", "replace")
    begin = max(PEM_BEGIN_RE.finditer(before), key=lambda m: m.start(), default=None)
    if begin is None or PEM_END_RE.search(before, begin.end()) is not None:
        return False
    return before.count("\n", begin.end()) <= PEM_MAX_LINES


def read_hole(hole: Hole, tailer: FileTailer) -> Iterator[LineChunk]:
    """The range's lines, chunk by chunk; raises unless they end exactly at its end."""
    while tailer.offset < hole.end:
        chunk = tailer.read()
        if chunk is None:
            chunk = tailer.take_partial()  # a last line without its newline
            if chunk is None:
                break
        if chunk.ends and chunk.ends[-1] > hole.end:
            keep = sum(1 for end in chunk.ends if end <= hole.end)
            if keep == 0 or chunk.ends[keep - 1] != hole.end:
                break
            del chunk.lines[keep:], chunk.ends[keep:]
            chunk.flags = {i: f for i, f in chunk.flags.items() if i < keep}
            tailer.offset = hole.end
        if chunk.lines:
            yield chunk
    refused = tailer.stream.refused if isinstance(tailer, CompressedFileTailer) else None
    if tailer.offset != hole.end and refused is not None:
        raise RefillError(f"{tailer.path}: refused as a compression bomb: {refused.reason}")
    if tailer.offset != hole.end:
        raise RefillError(
            f"{tailer.path}: lines do not end at byte {hole.end} (got to {tailer.offset}):"
            " the file changed"
        )
