"""Reads one open file from a byte offset in large chunks and splits it into lines.

A tailer holds the file descriptor, so a file renamed or deleted by rotation
is still read to its end. It hands out complete lines only; a partial last line
is held until its newline arrives, or emitted flagged when the file is finished.
A line longer than ``max_line_bytes`` is cut to that length and flagged; the
rest of it is skipped as it is read, so memory never holds more than the limit.
"""

from __future__ import annotations

__all__ = ["FileTailer", "LineChunk"]

import os
import time
from dataclasses import dataclass, field
from itertools import accumulate

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker, check_markers, marker_from, marker_of

TRUNCATED = "truncated"
PARTIAL = "partial"
#: A line's length plus its newline.
_PLUS_ONE = (1).__add__


@dataclass(slots=True)
class LineChunk:
    """Complete lines read from one file, with where each one ends in it."""

    #: Lines without their ``\n`` terminator.
    lines: list[bytes] = field(default_factory=list)
    #: File offset just past each line's terminator: ``ends[i]`` is where line i+1 starts.
    ends: list[int] = field(default_factory=list)
    #: Flags of the odd lines, by index: "truncated" (over max_line_bytes), "partial"
    #: (no newline at the end of a finished file).
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: Wall-clock time of the read, the record time of lines that carry none.
    read_time: float = 0.0

    def add(self, line: bytes, end: int, *flags: str) -> None:
        if flags:
            self.flags[len(self.lines)] = flags
        self.lines.append(line)
        self.ends.append(end)


class FileTailer:
    """Tails one file identified by ``fingerprint``. Not thread-safe: one reader at a time."""

    def __init__(
        self,
        *,
        source: str,
        path: str,
        fd: int,
        fingerprint: Fingerprint,
        offset: int,
        chunk_bytes: int,
        max_line_bytes: int,
    ) -> None:
        self.source = source
        self.path = path
        self.fingerprint = fingerprint
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        #: Where the first line not yet handed out starts.
        self.offset = offset
        #: Set once no watched path leads to this file any more (renamed away or deleted,
        #: or read by a backfill): read it to its end, then let it go.
        self.finish_at_eof = False
        self._fd: int | None = fd
        #: The start of the line being read (at most ``max_line_bytes`` of it).
        self._pending = b""
        #: Bytes of an overlong line read past ``_pending`` and dropped.
        self._skipped = 0
        self.last_growth = time.monotonic()
        #: The marker of the last bytes read: still there, or the file was rewritten.
        self._last_read: Marker | None = None

    @property
    def read_position(self) -> int:
        """Where the next read starts: past the lines handed out and the line in progress."""
        return self.offset + len(self._pending) + self._skipped

    def _pread(self, length: int, offset: int) -> bytes:
        assert self._fd is not None
        return os.pread(self._fd, length, offset)

    def stat(self) -> os.stat_result:
        """The open file's status (for a compressed file, the compressed file's)."""
        assert self._fd is not None
        return os.fstat(self._fd)

    def pread(self, length: int, offset: int) -> bytes:
        """Bytes of the file (decompressed, for a compressed one) at ``offset``."""
        return self._pread(length, offset)

    def marker_at(self, end: int) -> Marker | None:
        """The marker of an end we read up to, taken while the file still holds those bytes."""
        marker = marker_of(self._pread, end)
        if marker is None or self.replaced_in_place():
            return None
        return marker

    def mtime_ns(self) -> int:
        assert self._fd is not None
        return os.fstat(self._fd).st_mtime_ns

    def replaced_in_place(self) -> bool:
        """Whether the file was truncated or rewritten under us (copytruncate, ``> file``).

        Checked before every read: its first bytes no longer being the ones that
        identify it, or its size falling below what was read, both mean the bytes
        at our offset now belong to other lines.
        """
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self.read_position:
            return True
        head = self._pread(self.fingerprint.head_len, 0)
        if not self.fingerprint.matches_head(head):
            return True
        # Rewritten with the same first line and already past where we read.
        last = self._last_read
        return last is not None and check_markers([last], self._pread) is False

    def read(self) -> LineChunk | None:
        """Read one chunk; return its complete lines, or None at end of file."""
        start_at = self.read_position
        data = self._pread(self.chunk_bytes, start_at)
        if not data:
            return None
        self._last_read = marker_from(data, start_at + len(data)) or self._last_read
        self.last_growth = time.monotonic()
        chunk = LineChunk(read_time=time.time())
        start = 0
        if self._skipped:
            newline = data.find(b"\n")
            if newline < 0:
                self._skipped += len(data)
                return chunk
            self._skipped += newline
            self._hand_out_overlong(chunk)
            start = newline + 1
        buf = self._pending + data[start:] if self._pending else data[start:]
        last_newline = buf.rfind(b"\n")
        if last_newline >= 0:
            self._split(buf, last_newline, chunk)
            buf = buf[last_newline + 1 :]
        self._hold(buf)
        return chunk

    def _split(self, buf: bytes, last_newline: int, chunk: LineChunk) -> None:
        limit = self.max_line_bytes
        lines = buf[:last_newline].split(b"\n")
        lengths = list(map(len, lines))
        if max(lengths) <= limit:
            # No line to cut: every end at C speed (this ran for every line read).
            ends = list(accumulate(map(_PLUS_ONE, lengths), initial=self.offset))
            del ends[0]
            chunk.lines += lines
            chunk.ends += ends
            self.offset = ends[-1]
            self._pending = b""
            return
        end = self.offset
        for line in lines:
            end += len(line) + 1
            if len(line) > limit:
                chunk.add(line[:limit], end, TRUNCATED)
            else:
                chunk.add(line, end)
        self.offset = end
        self._pending = b""

    def _hold(self, rest: bytes) -> None:
        """Keep the start of the unfinished line; past the limit, keep only its first bytes."""
        if len(rest) > self.max_line_bytes:
            self._skipped = len(rest) - self.max_line_bytes
            rest = rest[: self.max_line_bytes]
        self._pending = rest

    def _hand_out_overlong(self, chunk: LineChunk, *flags: str) -> None:
        end = self.read_position + (0 if flags else 1)  # past its newline, if it has one
        chunk.add(self._pending, end, TRUNCATED, *flags)
        self.offset = end
        self._pending = b""
        self._skipped = 0

    def take_partial(self) -> LineChunk | None:
        """Hand out the unfinished last line, flagged: the file is finished."""
        chunk = LineChunk(read_time=time.time())
        if self._skipped:
            self._hand_out_overlong(chunk, PARTIAL)
        elif self._pending:
            self.offset += len(self._pending)
            chunk.add(self._pending, self.offset, PARTIAL)
            self._pending = b""
        return chunk if chunk.lines else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
