"""Rotated files compressed before we finished them (logrotate ``compress``).

Offsets stay those of the uncompressed file, so a rotated file found again as
``app.log.1.gz`` is finished from the decompressed stream at the checkpoint's
offset, under its own fingerprint: its byte ranges (and object keys) go on
where they stopped. Compressed files are never tailed as text.
"""

from __future__ import annotations

__all__ = [
    "COMPRESSED_SUFFIXES",
    "CompressedFileTailer",
    "DecompressedStream",
    "find_compressed",
    "is_compressed",
    "match_stream",
]

import bz2
import gzip
import lzma
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from shipper.fsutil import regular_files
from shipper.sources.checkpoints import Checkpoint
from shipper.sources.fingerprint import Fingerprint
from shipper.sources.markers import Marker, check_markers
from shipper.sources.tail import FileTailer

#: Decompressed bytes skipped per read when seeking forward.
_SKIP_BYTES = 1 << 20
#: Compressed bytes read at a time.
_RAW_READ_BYTES = 1 << 16


class _Decompressing(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def _gzip(raw: BinaryIO) -> _Decompressing:
    return gzip.GzipFile(fileobj=raw, mode="rb")


def _bzip2(raw: BinaryIO) -> _Decompressing:
    return bz2.BZ2File(raw)


def _xz(raw: BinaryIO) -> _Decompressing:
    return lzma.LZMAFile(raw)


class _ZstdReader:
    """zstd frames, one after another, with a frame cut short reported as EOFError.

    (zstandard's own stream reader ends quietly at a cut, which would hide a loss.)
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._started = False
        self._out = memoryview(b"")

    def read1(self, size: int = -1, /) -> bytes:
        while not self._out:
            chunk = self._raw.read(_RAW_READ_BYTES)
            if not chunk:
                if self._started and not self._frame.eof:
                    raise EOFError("zstd frame cut short")
                return b""
            self._out = memoryview(self._feed(chunk))
        size = len(self._out) if size < 0 else size
        data, self._out = bytes(self._out[:size]), self._out[size:]
        return data

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._frame.eof:  # the next frame starts in what is left
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            self._started = True
            out.append(self._frame.decompress(chunk))
            chunk = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._out = memoryview(b"")


def _zstd(raw: BinaryIO) -> _Decompressing:
    return _ZstdReader(raw)


_OPENERS: dict[str, Callable[[BinaryIO], _Decompressing]] = {
    ".gz": _gzip,
    ".bz2": _bzip2,
    ".xz": _xz,
    ".zst": _zstd,
}
COMPRESSED_SUFFIXES = tuple(_OPENERS)


def is_compressed(path: str) -> bool:
    return path.endswith(COMPRESSED_SUFFIXES)


class DecompressedStream:
    """Reads a compressed file by offsets of its decompressed bytes.

    Reads move forward; an earlier offset starts the decompression over. A damaged
    stream reads as ended there, and says why in ``damage``.
    """

    def __init__(self, path: str) -> None:
        suffix = next(s for s in COMPRESSED_SUFFIXES if path.endswith(s))
        self.path = path
        self._open = _OPENERS[suffix]
        self._raw: BinaryIO = open(path, "rb")  # noqa: SIM115  # closed by close()
        self._stream = self._open(self._raw)
        self._position = 0
        #: Why the stream ended early, if it did; the decompressed offset is ``position``.
        self.damage: str | None = None

    @property
    def position(self) -> int:
        return self._position

    def fileno(self) -> int:
        return self._raw.fileno()

    def pread(self, length: int, offset: int) -> bytes:
        if offset < self._position:
            self._raw.seek(0)
            self._stream = self._open(self._raw)
            self._position = 0
        parts: list[bytes] = []
        # read1, piece by piece: a damaged stream raises on the read that meets the
        # damage, and what it decompressed before that must not go with it.
        try:
            while self._position < offset:
                skipped = self._stream.read1(min(_SKIP_BYTES, offset - self._position))
                if not skipped:
                    return b""
                self._position += len(skipped)
            wanted = length
            while wanted > 0:
                data = self._stream.read1(wanted)
                if not data:
                    break
                parts.append(data)
                wanted -= len(data)
                self._position += len(data)
        except Exception as exc:
            # Whatever a damaged stream raises (EOFError, zlib.error, LZMAError,
            # ZstdError, OSError, ...), it ends there; no decoder error may stop the daemon.
            self.damage = f"{type(exc).__name__}: {exc}"
        return b"".join(parts)

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


class CompressedFileTailer(FileTailer):
    """A :class:`FileTailer` over a :class:`DecompressedStream`; always a rotated file."""

    def __init__(
        self,
        *,
        stream: DecompressedStream,
        source: str,
        path: str,
        fingerprint: Fingerprint,
        offset: int,
        chunk_bytes: int,
        max_line_bytes: int,
    ) -> None:
        super().__init__(
            source=source,
            path=path,
            fd=stream.fileno(),
            fingerprint=fingerprint,
            offset=offset,
            chunk_bytes=chunk_bytes,
            max_line_bytes=max_line_bytes,
        )
        self.stream = stream
        self.rotated = True

    def _pread(self, length: int, offset: int) -> bytes:
        return self.stream.pread(length, offset)

    def replaced_in_place(self) -> bool:
        return False  # a compressed rotation is final

    def marker_at(self, end: int) -> Marker | None:
        return None  # reading backwards would decompress it all again

    def close(self) -> None:
        if self._fd is not None:
            self.stream.close()
            self._fd = None


def find_compressed(
    directories: Iterable[Path], wanted: Sequence[Checkpoint]
) -> list[tuple[DecompressedStream, Checkpoint]]:
    """Open the compressed files in ``directories`` that hold a wanted file.

    A compressed file holds a known file if it starts with that file's first bytes
    and has the same bytes at its markers (where the stream is long enough to
    check). Each wanted file is matched at most once; unmatched streams are closed.
    """
    if not wanted:
        return []
    longest = max(c.fingerprint.head_len for c in wanted)
    left = list(wanted)
    found: list[tuple[DecompressedStream, Checkpoint]] = []
    for path, _ in regular_files(directories):
        if not left:
            break
        if not is_compressed(path):
            continue
        try:
            stream = DecompressedStream(path)
        except OSError:
            continue
        match = match_stream(stream, left, longest)
        if match is None:
            stream.close()
            continue
        left.remove(match)
        found.append((stream, match))
    return found


def match_stream(
    stream: DecompressedStream, wanted: Sequence[Checkpoint], longest: int
) -> Checkpoint | None:
    """The wanted file ``stream`` holds: same first bytes, same bytes at the markers."""
    head = stream.pread(longest, 0)
    for checkpoint in wanted:
        if not checkpoint.fingerprint.matches_head(head):
            continue
        # With markers, they must all be there and match; without (a checkpoint from
        # before markers), the first line must do. Either way the stream must reach
        # the offset: a shorter file that starts the same is another file.
        verdict = check_markers(checkpoint.markers, stream.pread)
        if verdict is False or (checkpoint.markers and verdict is None):
            continue
        offset = checkpoint.offset
        if offset > 0 and len(stream.pread(1, offset - 1)) != 1:
            continue
        return checkpoint
    return None
