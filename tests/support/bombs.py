"""Compression bombs: small files that decompress to a great many zeros.

Written a chunk at a time, so the expansion is never in the test's memory.
"""

from __future__ import annotations

__all__ = ["CHUNK", "write_bomb"]

import bz2
import lzma
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import zstandard

#: Zeros compressed at a time.
CHUNK = 1 << 20


def write_bomb(path: Path, out_bytes: int, *, prefix: bytes = b"", window_log: int = 0) -> None:
    """``prefix`` then ``out_bytes`` zeros (a whole number of CHUNKs), compressed as
    ``path``'s suffix says. ``window_log`` asks zstd for a window that large."""
    chunks = out_bytes // CHUNK
    suffix = path.suffix
    with path.open("wb") as out:
        if suffix == ".gz":
            _gzip(out, prefix, chunks)
        elif suffix == ".zst":
            params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
            with zstandard.ZstdCompressor(compression_params=params).stream_writer(
                out, closefd=False
            ) as writer:
                writer.write(prefix)
                for _ in range(chunks):
                    writer.write(bytes(CHUNK))
        else:
            compressor = bz2.BZ2Compressor(9) if suffix == ".bz2" else lzma.LZMACompressor()
            out.write(compressor.compress(prefix))
            for _ in range(chunks):
                out.write(compressor.compress(bytes(CHUNK)))
            out.write(compressor.flush())


def _gzip(out: BinaryIO, prefix: bytes, chunks: int) -> None:
    """One gzip member at level 9. Each chunk of zeros ends with a full flush, which
    forgets the history: every chunk then compresses to the same bytes, computed once."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # no name, no mtime
    out.write(deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH))
    zeros = bytes(CHUNK)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(chunks):
        out.write(block)
        crc = zlib.crc32(zeros, crc)
    out.write(deflate.flush(zlib.Z_FINISH))
    out.write(struct.pack("<II", crc, (len(prefix) + chunks * CHUNK) & 0xFFFFFFFF))
