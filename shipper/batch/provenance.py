"""The span list an object of several files ends with: which byte ranges of which
files it holds, beyond what its metadata can carry.

S3 allows 2 KB of user metadata in all, room for about 40 files' ranges. So a
zstd object of several files also ends with a *skippable frame* (RFC 8878,
section 3.1.2) holding every span: decoders skip it (``zstd -d``, and Python's
``zstandard``, whether it decodes the first frame or all of them), so consumers
of the NDJSON never see it. At the end rather than the start: a one-shot decode
reads the first frame only, and a span list there would decode to nothing.

The frame's size is in the object's ``shipper-spans-bytes`` metadata, so a reader
fetches just that suffix (an HTTP range ``bytes=-N``), not the body.

Frame: magic ``0x184D2A5E`` (little-endian u32), payload length (u32), payload.
The payload is a zstd frame of JSON::

    {"format": "shipper-spans/1",
     "spans": [[fingerprint, path, start, end, lines, end_marker_or_null], ...]}

in the order the object's records come. It is a function of the spool entry
alone: an entry uploaded again after a crash makes the same bytes.
"""

from __future__ import annotations

__all__ = [
    "SEGMENTS_METADATA_BYTES",
    "SPANS_FORMAT",
    "SPANS_MAGIC",
    "SpanRecord",
    "read_spans_trailer",
    "spans_trailer",
]

import struct
from collections.abc import Sequence
from typing import NamedTuple

import orjson
import zstandard

from shipper.batch.segment import Segment
from shipper.errors import SpansError

#: Bytes of ``shipper-segments`` metadata (every file's range) an object may carry:
#: S3 allows 2 KB of metadata in all. About 40 files.
SEGMENTS_METADATA_BYTES = 1024
#: One of the sixteen skippable-frame magic numbers (0x184D2A50 to 0x184D2A5F).
SPANS_MAGIC = 0x184D2A5E
SPANS_FORMAT = "shipper-spans/1"
_HEADER = struct.Struct("<II")
#: A span list larger than this (decompressed) is refused when read: 100,000 spans
#: of long paths stay well below it.
MAX_SPANS_JSON_BYTES = 64 * 1024 * 1024


class SpanRecord(NamedTuple):
    """One file's range in an object, as its span list gives it."""

    fingerprint: str
    path: str
    start: int
    end: int
    lines: int
    #: The first 16 hex digits of the SHA-256 of the 64 bytes before ``end``.
    end_marker: str | None


def spans_trailer(segments: Sequence[Segment]) -> bytes:
    """The skippable frame listing ``segments``, to append to the compressed body."""
    spans = [
        [
            s.fingerprint.id,
            s.path,
            s.start,
            s.end,
            s.lines,
            None if s.end_marker is None else s.end_marker.digest,
        ]
        for s in segments
    ]
    document = orjson.dumps({"format": SPANS_FORMAT, "spans": spans})
    payload = zstandard.ZstdCompressor(level=3).compress(document)
    return _HEADER.pack(SPANS_MAGIC, len(payload)) + payload


def read_spans_trailer(tail: bytes) -> list[SpanRecord]:
    """The spans of the frame ``tail`` is (an object's last ``shipper-spans-bytes``)."""
    if len(tail) < _HEADER.size:
        raise SpansError(f"span list of {len(tail)} bytes: shorter than its header")
    magic, length = _HEADER.unpack_from(tail)
    if magic != SPANS_MAGIC:
        raise SpansError(f"no span list: magic {magic:#x} at the start of the object's tail")
    if length != len(tail) - _HEADER.size:
        raise SpansError(f"span list says {length} bytes, {len(tail) - _HEADER.size} follow")
    try:
        document = zstandard.ZstdDecompressor().decompress(
            tail[_HEADER.size :], max_output_size=MAX_SPANS_JSON_BYTES
        )
        parsed = orjson.loads(document)
    except (zstandard.ZstdError, orjson.JSONDecodeError) as exc:
        raise SpansError(f"span list unreadable: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("format") != SPANS_FORMAT:
        raise SpansError("span list of an unknown format")
    try:
        return [_span(span) for span in parsed["spans"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SpansError(f"span list malformed: {exc}") from exc


def _span(span: object) -> SpanRecord:
    if not isinstance(span, list) or len(span) != len(SpanRecord._fields):
        raise ValueError(f"bad span {span!r}")
    fid, path, start, end, lines, marker = span
    numbers = [start, end, lines]
    if not (isinstance(fid, str) and isinstance(path, str)) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers
    ):
        raise ValueError(f"bad span {span!r}")
    if marker is not None and not isinstance(marker, str):
        raise ValueError(f"bad end marker {marker!r}")
    return SpanRecord(fid, path, start, end, lines, marker)
