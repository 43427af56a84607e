"""Reads one open file from a byte offset in large chunks and splits it into lines.

A tailer holds the file descriptor, so a file renamed or deleted by rotation
is still read to its end. It hands out complete lines only; a partial last line
is held until its newline arrives, or emitted flagged when the file is finished.
"""

from __future__ import annotations

__all__ = ["FileTailer", "LineChunk"]

import os
import time
from dataclasses import dataclass, field

from shipper.sources.fingerprint import Fingerprint


@dataclass(slots=True)
class LineChunk:
    """Complete lines read from one file, with where each one ends in it."""

    #: Lines without their ``\n`` terminator.
    lines: list[bytes] = field(default_factory=list)
    #: File offset just past each line's terminator: ``ends[i]`` is where line i+1 starts.
    ends: list[int] = field(default_factory=list)
    #: The index in ``lines`` of a final line that had no newline (finished file), else -1.
    partial_index: int = -1
    #: Wall-clock time of the read, the record time of lines that carry none.
    read_time: float = 0.0


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
    ) -> None:
        self.source = source
        self.path = path
        self.fingerprint = fingerprint
        self.chunk_bytes = chunk_bytes
        #: Where the first line not yet handed out starts.
        self.offset = offset
        #: Set once no watched path leads to this file any more (renamed away or deleted).
        self.rotated = False
        self._fd: int | None = fd
        self._pending = b""
        self.last_growth = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def read_position(self) -> int:
        """Where the next read starts: past the lines handed out and the held partial line."""
        return self.offset + len(self._pending)

    def replaced_in_place(self) -> bool:
        """Whether the file was truncated or rewritten under us (copytruncate, ``> file``).

        Checked before every read: its first bytes no longer being the ones that
        identify it, or its size falling below what was read, both mean the bytes
        at our offset now belong to other lines.
        """
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self.read_position:
            return True
        head = os.pread(self._fd, self.fingerprint.head_len, 0)
        return not self.fingerprint.matches_head(head)

    def read(self) -> LineChunk | None:
        """Read one chunk; return its complete lines, or None at end of file."""
        assert self._fd is not None
        data = os.pread(self._fd, self.chunk_bytes, self.read_position)
        now = time.time()
        if not data:
            return None
        self.last_growth = time.monotonic()
        buf = self._pending + data if self._pending else data
        last_newline = buf.rfind(b"\n")
        chunk = LineChunk(read_time=now)
        if last_newline < 0:
            self._pending = buf
            return chunk
        self._pending = buf[last_newline + 1 :]
        lines = buf[:last_newline].split(b"\n")
        end = self.offset
        ends = chunk.ends
        for line in lines:
            end += len(line) + 1
            ends.append(end)
        chunk.lines = lines
        self.offset = end
        return chunk

    def take_partial(self) -> LineChunk | None:
        """Hand out the held partial line as a final, flagged line (the file is finished)."""
        if not self._pending:
            return None
        line = self._pending
        self._pending = b""
        self.offset += len(line)
        return LineChunk(lines=[line], ends=[self.offset], partial_index=0, read_time=time.time())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
