"""Turns a cut batch into what the spool stores and the store receives: keyed, compressed."""

from __future__ import annotations

__all__ = ["CODEC", "EncodedBatch", "encode_batch"]

import hashlib
from dataclasses import dataclass

import zstandard

from shipper.batching import Batch
from shipper.keys import object_key
from shipper.spool import Segment

CODEC = "zstd"


@dataclass(frozen=True, slots=True)
class EncodedBatch:
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


def encode_batch(batch: Batch, *, prefix: str, compression_level: int) -> EncodedBatch:
    """Pure and CPU-bound (zstd, SHA-256): run it off the event loop."""
    body = batch.body
    fingerprint = batch.fingerprint
    return EncodedBatch(
        key=object_key(
            prefix=prefix,
            source=batch.source,
            fingerprint_id=fingerprint.id,
            start=batch.start,
            end=batch.end,
            first_time=batch.first_time,
        ),
        source=batch.source,
        segments=(Segment(fingerprint, batch.path, batch.start, batch.end, batch.lines),),
        records=batch.records,
        body=zstandard.ZstdCompressor(level=compression_level).compress(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
        uncompressed_bytes=len(body),
        codec=CODEC,
        first_time=batch.first_time,
    )
