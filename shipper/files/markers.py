"""Content markers: short checksums of the bytes just before a position we read up to.

The first line says which file a file *starts* like; a marker says that the
bytes we already read are still the bytes there. A checkpoint keeps the
markers of its last few sealed ends. They decide three things: whether a
known file can be resumed (not truncated and rewritten with the same first
line), whether a file on another inode that starts the same is a copy of it
(copytruncate, a move across filesystems), and whether a compressed file is
the rotated file we were reading.
"""

from __future__ import annotations

__all__ = [
    "MARKERS_KEPT",
    "MARKER_BYTES",
    "Marker",
    "Pread",
    "check_markers",
    "marker_from",
    "marker_of",
    "remember",
]

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: How many bytes before the position a marker covers (fewer near the start of a file).
MARKER_BYTES = 64
#: Markers kept per file: the last few sealed ends, so a copy taken a little before
#: our last read can still be checked at an earlier end.
MARKERS_KEPT = 4

#: ``pread(length, offset)``: the bytes of a file (or a decompressed stream) at an offset.
Pread = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class Marker:
    #: The bytes checked are ``[max(0, end - MARKER_BYTES), end)``.
    end: int
    #: The first 16 hex digits of their SHA-256: a content check, not a security one.
    digest: str

    @property
    def start(self) -> int:
        return max(0, self.end - MARKER_BYTES)

    def to_json(self) -> list[int | str]:
        return [self.end, self.digest]

    @classmethod
    def from_json(cls, data: Sequence[object]) -> Marker:
        end, digest = data
        if not isinstance(end, int) or not isinstance(digest, str):
            raise ValueError(f"bad marker {data!r}")
        return cls(end, digest)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def marker_of(pread: Pread, end: int) -> Marker | None:
    """The marker of ``end``, read through ``pread``; None if the bytes are not all there.

    Nor at byte 0: a marker of no bytes would vouch for any file.
    """
    if end <= 0:
        return None
    start = max(0, end - MARKER_BYTES)
    data = pread(end - start, start)
    if len(data) != end - start:
        return None
    return Marker(end, _digest(data))


def marker_from(data: bytes, end: int) -> Marker | None:
    """The marker of ``end``, from ``data``: bytes read that end at ``end``."""
    length = min(MARKER_BYTES, end)
    if end <= 0 or len(data) < length:
        return None
    return Marker(end, _digest(data[len(data) - length :]))


def check_markers(markers: Sequence[Marker], pread: Pread) -> bool | None:
    """Whether the bytes at the markers are the ones we read.

    True when at least one could be checked and all checked match; False when one
    does not match; None when every marker lies past the end (nothing to say).
    """
    checked = False
    for marker in markers:
        length = marker.end - marker.start
        data = pread(length, marker.start)
        if len(data) < length:
            continue  # past the end: a shorter file, or a copy taken earlier
        if _digest(data) != marker.digest:
            return False
        checked = True
    return True if checked else None


def remember(markers: tuple[Marker, ...], new: Marker) -> tuple[Marker, ...]:
    """Add the marker of a newer end, keeping the last :data:`MARKERS_KEPT`."""
    if markers and new.end <= markers[-1].end:
        return markers
    return (*markers, new)[-MARKERS_KEPT:]
