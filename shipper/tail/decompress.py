"""Reading a compressed file by the offsets of its decompressed bytes, safely.

A compressed file is untrusted input: a few kilobytes can decompress to
gigabytes (a compression bomb). No decompressor is ever asked for more than
:data:`_MAX_OUTPUT_BYTES` at a time, nor fed more than :data:`_RAW_READ_BYTES`,
and a file that expands past :data:`MAX_EXPANSION_RATIO` (judged once it has
yielded :data:`RATIO_CHECKED_AFTER_BYTES`) is refused: it reads as ended there,
is never read again through that stream, and ``DecompressedStream.refused``
says how far it got.
"""

from __future__ import annotations

__all__ = [
    "COMPRESSED_SUFFIXES",
    "DECODER_MEMORY_BYTES",
    "MAX_EXPANSION_RATIO",
    "RATIO_CHECKED_AFTER_BYTES",
    "DecompressedStream",
    "Refusal",
    "check_expansion",
    "is_compressed",
]

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from shipper.errors import DecompressionRefusedError
from shipper.files.confined import open_log_file

#: Decompressed bytes skipped per read when seeking forward.
_SKIP_BYTES = 1 << 20


#: Compressed bytes handed to a decompressor at a time. What it has taken is known
#: to within this much, so the expansion ratio is too.
_RAW_READ_BYTES = 1 << 13


#: Decompressed bytes asked of a decompressor in one call, whatever a caller wants:
#: what one read can cost in memory, bomb or not.
_MAX_OUTPUT_BYTES = 1 << 20


#: Decompressed bytes per compressed byte read beyond which a file is refused as a
#: compression bomb. Measured: our writer's JSON lines compress 24-45x (gzip -6/-9,
#: zstd -3/-19, zstd --ultra -22 --long, xz -9, bzip2 -9); a log of near-identical
#: short lines (a health check whose timestamp alone changes) 27x with gzip, 55x
#: with bzip2, 67x with zstd -3, 118x with zstd -19, 133x with zstd --ultra -22 and
#: 371x with xz -9. Bombs: deflate cannot exceed about 1,030x, and zstd, xz and
#: bzip2 turn zeros into 7,000x to over 100,000x. 700x lies between: about twice
#: the most compressible log we made, and still a third below a gzip bomb. (Lines
#: all identical, without even a timestamp, go past it with any codec but gzip:
#: no ratio tells them from a bomb.) Counted from the file's start, so a bomb behind
#: real lines is caught too, a little later.
MAX_EXPANSION_RATIO = 700


#: Decompressed bytes any file may yield before its ratio is judged: a small file
#: (a few thousand identical lines) may compress beyond any ratio, and costs nothing.
RATIO_CHECKED_AFTER_BYTES = 4 << 20


#: Memory a decoder may use: the zstd window, the xz dictionary. zstd itself refuses
#: larger windows unless told otherwise, and it admits every preset of the four
#: tools (xz -9 needs 65 MiB); a file asking for more (an xz header may ask for
#: 1.5 GiB, touched as it decompresses) is refused like a bomb.
DECODER_MEMORY_BYTES = 128 << 20


def check_expansion(compressed: int, decompressed: int) -> None:
    """Raise :class:`DecompressionRefusedError` if ``compressed`` bytes yielding
    ``decompressed`` is too much for a log (see :data:`MAX_EXPANSION_RATIO`)."""
    if decompressed <= RATIO_CHECKED_AFTER_BYTES:
        return
    if decompressed > MAX_EXPANSION_RATIO * compressed:
        raise DecompressionRefusedError(
            f"expands more than {MAX_EXPANSION_RATIO}x: {compressed} compressed bytes"
            f" gave {decompressed}",
            compressed=compressed,
            decompressed=decompressed,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A compressed file given up on as a compression bomb, and how far it was read."""

    reason: str
    #: Bytes of the compressed file read when it was refused.
    compressed_offset: int
    #: Bytes it had decompressed to by then.
    decompressed_offset: int
    #: The file as it was (device, inode, size, mtime_ns): what is reported once.
    file: tuple[int, int, int, int]

    def fields(self) -> dict[str, object]:
        """For a log line."""
        return {
            "reason": self.reason,
            "compressed_offset": self.compressed_offset,
            "decompressed_offset": self.decompressed_offset,
            "max_expansion_ratio": MAX_EXPANSION_RATIO,
        }


class _Decompressing(Protocol):
    def read1(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class _TooMuchMemory(Exception):
    """A decoder would need more than DECODER_MEMORY_BYTES for this file."""


class _CountedInput:
    """The compressed file as a decompressor reads it: in small pieces, counted."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        #: Compressed bytes handed to the decompressor so far.
        self.consumed = 0

    def read(self, size: int = -1, /) -> bytes:
        wanted = _RAW_READ_BYTES if size < 0 else min(size, _RAW_READ_BYTES)
        data = self._raw.read(wanted)
        self.consumed += len(data)
        return data

    def seekable(self) -> bool:
        return False  # decompression starts over with a new reader instead

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("a compressed file is decompressed forward only")

    def fileno(self) -> int:
        return self._raw.fileno()


def _gzip(source: _CountedInput) -> _Decompressing:
    return gzip.GzipFile(fileobj=source, mode="rb")


def _bzip2(source: _CountedInput) -> _Decompressing:
    return bz2.BZ2File(source)


class _XzReader:
    """xz (or legacy lzma) streams one after another, decoded within
    DECODER_MEMORY_BYTES (``lzma.LZMAFile`` takes no memory limit)."""

    def __init__(self, source: _CountedInput) -> None:
        self._source = source
        self._decoder = self._new_decoder()

    @staticmethod
    def _new_decoder() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_AUTO, memlimit=DECODER_MEMORY_BYTES)

    def read1(self, size: int = -1, /) -> bytes:
        size = _MAX_OUTPUT_BYTES if size < 0 else size
        while True:
            if self._decoder.eof:
                rest = self._next_stream()
                if rest is None:
                    return b""
                self._decoder = self._new_decoder()
            elif self._decoder.needs_input:
                rest = self._source.read(_RAW_READ_BYTES)
                if not rest:
                    raise EOFError("xz stream cut short")
            else:
                rest = b""  # output held back by the last call's size limit
            try:
                data = self._decoder.decompress(rest, size)
            except lzma.LZMAError as exc:
                if "memory" in str(exc).lower():
                    raise _TooMuchMemory(str(exc)) from exc
                raise
            if data:
                return data

    def _next_stream(self) -> bytes | None:
        """The start of the next stream past any padding, or None at the file's end."""
        rest = self._decoder.unused_data
        while not (rest := rest.lstrip(b"\0")):
            rest = self._source.read(_RAW_READ_BYTES)
            if not rest:
                return None
        return rest

    def close(self) -> None:
        self._decoder = self._new_decoder()  # lets the old dictionary go


def _xz(source: _CountedInput) -> _Decompressing:
    return _XzReader(source)


class _ZstdReader:
    """zstd frames, one after another, with a frame cut short reported as EOFError.

    zstandard's stream reader bounds each read's output (its ``decompressobj``
    would return all a chunk expands to at once), but ends quietly at a cut; so
    at its end the frames' headers are walked to tell a cut from an end.
    """

    def __init__(self, source: _CountedInput) -> None:
        self._fd = source.fileno()
        # It only ever calls read() on its source.
        decompressor = zstandard.ZstdDecompressor(max_window_size=DECODER_MEMORY_BYTES)
        self._reader = decompressor.stream_reader(
            cast(IO[bytes], source),
            read_size=_RAW_READ_BYTES,
            read_across_frames=True,
            closefd=False,
        )
        self._cut: str | None = None
        self._ended = False

    def read1(self, size: int = -1, /) -> bytes:
        try:
            data = b"" if self._ended else self._reader.read1(size)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise _TooMuchMemory(str(exc)) from exc
            raise
        if not data and not self._ended:
            self._ended = True
            self._cut = _zstd_cut(self._fd)
        if not data and self._cut is not None:
            raise EOFError(f"zstd frame cut short: {self._cut}")
        return data

    def close(self) -> None:
        self._reader.close()  # type: ignore[no-untyped-call]  # (unannotated in zstandard)


_ZSTD_MAGIC = 0xFD2FB528


#: Skippable frames have magic numbers 0x184D2A50 to 0x184D2A5F.
_ZSTD_SKIPPABLE = 0x184D2A50


def _zstd_cut(fd: int) -> str | None:
    """Why the zstd frames in the file end before their end, or None if they don't.

    Only headers are read, blocks are stepped over by their sizes: nothing is
    decompressed. Run once the decoder has accepted everything up to the end.
    """
    size = os.fstat(fd).st_size
    at = 0
    while at < size:
        end = _zstd_frame_end(fd, at)
        if end is None or end > size:
            return f"the frame at compressed byte {at} goes on past the end of the file"
        at = end
    return None


def _zstd_frame_end(fd: int, at: int) -> int | None:
    """Where the frame starting at ``at`` ends, or None when the file ends inside it."""
    header = os.pread(fd, 8, at)
    if len(header) < 5:
        return None
    magic = int.from_bytes(header[:4], "little")
    if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
        return None if len(header) < 8 else at + 8 + int.from_bytes(header[4:8], "little")
    if magic != _ZSTD_MAGIC:
        return None  # the decoder refuses it before this is asked
    descriptor = header[4]
    single_segment = descriptor >> 5 & 1
    checksum_bytes = 4 if descriptor >> 2 & 1 else 0
    dict_id_bytes = (0, 1, 2, 4)[descriptor & 3]
    content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    at += 5 + (1 - single_segment) + dict_id_bytes + content_size_bytes
    while True:
        block = os.pread(fd, 3, at)
        if len(block) < 3:
            return None
        value = int.from_bytes(block, "little")
        last, kind, length = value & 1, value >> 1 & 3, value >> 3
        at += 3 + (1 if kind == 1 else length)  # an RLE block holds one byte
        if last:
            return at + checksum_bytes


def _zstd(source: _CountedInput) -> _Decompressing:
    return _ZstdReader(source)


class _BoundedReader:
    """A decompressor asked for a bounded amount at a time, refused once it expands
    past :data:`MAX_EXPANSION_RATIO` (raising :class:`DecompressionRefusedError`)."""

    def __init__(self, source: _CountedInput, opener: Callable[[_CountedInput], _Decompressing]):
        self._source = source
        self._stream = opener(source)
        #: Decompressed bytes it has yielded.
        self.decompressed = 0

    def read1(self, size: int) -> bytes:
        try:
            data = self._stream.read1(max(1, min(size, _MAX_OUTPUT_BYTES)))
        except _TooMuchMemory as exc:
            raise DecompressionRefusedError(
                f"needs more than {DECODER_MEMORY_BYTES >> 20} MiB to decompress ({exc})",
                compressed=self._source.consumed,
                decompressed=self.decompressed,
            ) from None
        self.decompressed += len(data)
        check_expansion(self._source.consumed, self.decompressed)
        return data

    def close(self) -> None:
        self._stream.close()


_OPENERS: dict[str, Callable[[_CountedInput], _Decompressing]] = {
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
    stream reads as ended there, and says why in ``damage``. One that expands too
    far (see :data:`MAX_EXPANSION_RATIO`) reads as ended there for good, even from
    an earlier offset, and says how far it got in ``refused``.
    """

    def __init__(self, path: str, *, roots: Sequence[str] | None = None) -> None:
        suffix = next(s for s in COMPRESSED_SUFFIXES if path.endswith(s))
        self.path = path
        self._open = _OPENERS[suffix]
        # Never a FIFO or a device, never through a symlink out of ``roots`` (none
        # at all without): see shipper.files.confined.open_log_file. Closed by close().
        self._raw: BinaryIO = os.fdopen(open_log_file(path, roots=roots), "rb")
        self._stream = self._start()
        self._position = 0
        #: Why the stream ended early, if it did; the decompressed offset is ``position``.
        self.damage: str | None = None
        #: Set once it expanded too far: never decompressed again.
        self.refused: Refusal | None = None

    def _start(self) -> _BoundedReader:
        self._raw.seek(0)
        return _BoundedReader(_CountedInput(self._raw), self._open)

    @property
    def position(self) -> int:
        return self._position

    def fileno(self) -> int:
        return self._raw.fileno()

    def pread(self, length: int, offset: int) -> bytes:
        if self.refused is not None:
            return b""  # decompressing it again would only expand as far again
        if offset < self._position:
            self._stream.close()
            self._stream = self._start()
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
        except DecompressionRefusedError as exc:
            self.refused = self._refusal(exc)
        except Exception as exc:
            # Whatever a damaged stream raises (EOFError, zlib.error, LZMAError,
            # ZstdError, OSError, ...), it ends there; no decoder error may stop the daemon.
            self.damage = f"{type(exc).__name__}: {exc}"
        return b"".join(parts)

    def _refusal(self, exc: DecompressionRefusedError) -> Refusal:
        st = os.fstat(self._raw.fileno())
        return Refusal(
            exc.reason,
            exc.compressed,
            exc.decompressed,
            (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        )

    def close(self) -> None:
        self._stream.close()
        self._raw.close()
