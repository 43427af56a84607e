"""Turns a cut batch into what the spool stores and the store receives: keyed, compressed."""

from __future__ import annotations

__all__ = ["CONTENT_ENCODING", "PackedBatch", "compress", "pack_batch", "pack_batches"]

import gzip
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard

from shipper.batch.batcher import Batch
from shipper.batch.objectkey import KeyTemplate
from shipper.batch.segment import Segment
from shipper.files.markers import Marker

#: The HTTP Content-Encoding of each codec's objects.
CONTENT_ENCODING = {"zstd": "zstd", "gzip": "gzip"}


def compress(body: bytes | bytearray, codec: str, level: int) -> bytes:
    if codec == "gzip":
        # mtime=0: the same batch compresses to the same bytes, whenever it is sealed.
        return gzip.compress(body, compresslevel=level, mtime=0)
    return zstandard.ZstdCompressor(level=level).compress(body)


@dataclass(frozen=True, slots=True)
class PackedBatch:
    key: str
    source: str
    segments: tuple[Segment, ...]
    records: int
    #: The compressed body, exactly the bytes the object will hold.
    body: bytes
    #: SHA-256 of the uncompressed NDJSON: what the object must decode to.
    body_sha256: str
    uncompressed_bytes: int
    codec: str
    first_time: float
    #: The checksum of the source bytes just before ``end``: proves, when the range
    #: is read again, that it is read from the same bytes.
    end_marker: Marker | None = None
    #: "batch", or "gap": a record of lines deleted before they were shipped.
    kind: str = "batch"


def pack_batch(
    batch: Batch,
    *,
    keys: KeyTemplate,
    codec: str,
    compression_level: int,
    end_marker: Marker | None = None,
) -> PackedBatch:
    """Pure and CPU-bound (compression, SHA-256): run it off the event loop."""
    return pack_batches(
        [(batch, end_marker)], keys=keys, codec=codec, compression_level=compression_level
    )


def pack_batches(
    batches: Sequence[tuple[Batch, Marker | None]],
    *,
    keys: KeyTemplate,
    codec: str,
    compression_level: int,
) -> PackedBatch:
    """Batches of one source, each of another file, as one object: the first names it.

    The key stays one batch's alone: it is rendered from the first file's range,
    and a byte range of a file is sealed once, in one entry, whatever else is
    packed beside it. Each file's range keeps its own end marker.
    """
    first, last_marker = batches[0][0], batches[-1][1]
    body = b"".join(batch.body for batch, _ in batches) if len(batches) > 1 else first.body
    several = len(batches) > 1
    return PackedBatch(
        key=keys.render(
            source=first.source,
            fingerprint_id=first.fingerprint.id,
            start=first.start,
            end=first.end,
            first_time=first.first_time,
        ),
        source=first.source,
        segments=tuple(
            Segment(
                batch.fingerprint,
                batch.path,
                batch.start,
                batch.end,
                batch.lines,
                end_marker=marker if several else None,
            )
            for batch, marker in batches
        ),
        records=sum(batch.records for batch, _ in batches),
        body=compress(body, codec, compression_level),
        body_sha256=hashlib.sha256(body).hexdigest(),
        uncompressed_bytes=len(body),
        codec=codec,
        first_time=first.first_time,
        end_marker=last_marker,
    )
