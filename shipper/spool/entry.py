"""A spool entry on disk: its layout, its name, and what a damaged one still says.

Layout (integers big-endian):
``MAGIC | u32 header length | header JSON | sha256(header JSON) | body``; the
header holds the body's length and SHA-256. An entry of several files repeats its
header after the body (``header | sha256 | u32 length | TRAILER_MAGIC``), so a
damaged header still leaves every file's range known. Name:
``<seq>-<fingerprint id>-<start>-<end>.entry`` after the entry's first file range,
with ``-<files>`` before the suffix when it holds ranges of several files.
"""

from __future__ import annotations

__all__ = [
    "ENTRY_SUFFIX",
    "MAGIC",
    "SPOOL_FORMAT_VERSION",
    "TRAILER_MAGIC",
    "DamagedEntry",
    "SpoolEntry",
    "damaged_entry",
    "decode_entry",
    "decode_header",
    "decode_trailer",
    "encode_entry",
    "entry_name",
    "header_marker",
    "name_parts",
]

import contextlib
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shipper.batch.segment import Segment
from shipper.errors import SpoolCorruptError
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker

SPOOL_FORMAT_VERSION = 2


MAGIC = b"SHPSPOOL"


#: Ends an entry that repeats its header after the body (an entry of several files).
TRAILER_MAGIC = b"SHPTRAIL"


ENTRY_SUFFIX = ".entry"


_U32 = struct.Struct(">I")


_DIGEST = 32


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A sealed batch on disk. ``header`` is everything needed to upload and account for it."""

    path: Path
    seq: int
    key: str
    source: str
    segments: tuple[Segment, ...]
    records: int
    #: SHA-256 of the uncompressed NDJSON body: what the store's object must decode to.
    body_sha256: str
    uncompressed_bytes: int
    codec: str
    size: int
    first_time: float = 0.0
    end_marker: Marker | None = None
    #: "batch" (lines of a file) or "gap" (a record of lines deleted unshipped).
    kind: str = "batch"

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.segments)


def encode_entry(header: dict[str, Any], body: bytes, *, trailer: bool = False) -> bytes:
    """Frame ``header`` (completed with the body's length and SHA-256) and ``body``.

    ``trailer``: the header again after the body, checksummed and framed from the
    end. An entry of several files needs it: its name names the first file only,
    so with its header damaged the other files' ranges could not be read again.
    """
    body_sha256 = hashlib.sha256(body).hexdigest()
    header_json = orjson.dumps({**header, "stored_bytes": len(body), "stored_sha256": body_sha256})
    header_sha256 = hashlib.sha256(header_json).digest()
    parts = [MAGIC, _U32.pack(len(header_json)), header_json, header_sha256, body]
    if trailer:
        parts += [header_json, header_sha256, _U32.pack(len(header_json)), TRAILER_MAGIC]
    return b"".join(parts)


def decode_trailer(data: bytes | memoryview) -> dict[str, Any]:
    """The copy of the header an entry of several files ends with (see :func:`encode_entry`)."""
    view = memoryview(data)
    end = len(view) - len(TRAILER_MAGIC)
    if end < _U32.size + _DIGEST or bytes(view[end:]) != TRAILER_MAGIC:
        raise SpoolCorruptError("no intact trailer")
    (header_len,) = _U32.unpack_from(view, end - _U32.size)
    digest_at = end - _U32.size - _DIGEST
    header_json = bytes(view[max(0, digest_at - header_len) : digest_at])
    if len(header_json) != header_len:
        raise SpoolCorruptError("trailer longer than the entry")
    if hashlib.sha256(header_json).digest() != bytes(view[digest_at : digest_at + _DIGEST]):
        raise SpoolCorruptError("trailer checksum mismatch")
    try:
        header = orjson.loads(header_json)
    except orjson.JSONDecodeError as exc:
        raise SpoolCorruptError(f"unreadable trailer: {exc}") from exc
    if not isinstance(header, dict):
        raise SpoolCorruptError("unreadable trailer")
    return header


def decode_header(data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """Check an entry's framing and header checksum; return the header and where the body starts."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise SpoolCorruptError("bad magic")
    pos = len(MAGIC)
    if len(view) < pos + _U32.size:
        raise SpoolCorruptError("truncated before the header length")
    (header_len,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    header_json = bytes(view[pos : pos + header_len])
    digest = bytes(view[pos + header_len : pos + header_len + _DIGEST])
    if len(digest) != _DIGEST:
        raise SpoolCorruptError("truncated inside the header")
    if hashlib.sha256(header_json).digest() != digest:
        raise SpoolCorruptError("header checksum mismatch")
    try:
        header = orjson.loads(header_json)
    except orjson.JSONDecodeError as exc:
        raise SpoolCorruptError(f"unreadable header: {exc}") from exc
    if not isinstance(header, dict) or header.get("version") != SPOOL_FORMAT_VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise SpoolCorruptError(f"unsupported format version {version!r}")
    return header, pos + header_len + _DIGEST


def decode_entry(data: bytes) -> tuple[dict[str, Any], memoryview]:
    """Check an entry's framing and checksums; return its header and body.

    A damaged body raises with the (intact) header attached, so the caller still
    knows which lines the entry held.
    """
    header, body_at = decode_header(data)
    try:
        expected_len, expected_sha = int(header["stored_bytes"]), str(header["stored_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SpoolCorruptError(f"header without the body's length and checksum: {exc}") from exc
    body = memoryview(data)[body_at:]
    if len(body) > expected_len and bytes(body[-len(TRAILER_MAGIC) :]) == TRAILER_MAGIC:
        body = body[:expected_len]  # a copy of the header follows: not needed here
    if len(body) != expected_len:
        raise SpoolCorruptError(
            f"truncated: body {len(body)} of {expected_len} bytes", header=header
        )
    if hashlib.sha256(body).hexdigest() != expected_sha:
        raise SpoolCorruptError("body checksum mismatch", header=header)
    return header, body


@dataclass(frozen=True, slots=True)
class DamagedEntry:
    """An entry that failed its checks, and what is known of the lines it held.

    From an intact header: everything. From the name alone (the header is
    damaged too): the fingerprint id and byte range, which with the checkpoints
    are enough to find the file again.
    """

    path: Path
    reason: str
    fingerprint_id: str | None
    start: int | None
    end: int | None
    fingerprint: Fingerprint | None = None
    key: str | None = None
    source: str | None = None
    file_path: str | None = None
    first_time: float | None = None
    codec: str | None = None
    end_marker: Marker | None = None
    #: The ranges of the other files the entry held, from its header.
    others: tuple[Segment, ...] = ()
    #: How many other files the entry held, when only its name is readable.
    unknown_files: int = 0

    @classmethod
    def from_header(cls, path: Path, reason: str, header: dict[str, Any]) -> DamagedEntry:
        segments = [Segment.from_json(s) for s in header["segments"]]
        segment = segments[0]
        return cls(
            path=path,
            reason=reason,
            fingerprint_id=segment.fingerprint.id,
            start=segment.start,
            end=segment.end,
            fingerprint=segment.fingerprint,
            key=str(header["key"]),
            source=str(header["source"]),
            file_path=segment.path,
            first_time=float(header["first_time"]),
            codec=str(header["codec"]),
            end_marker=segment.end_marker or header_marker(header),
            others=tuple(segments[1:]),
        )


def entry_name(seq: int, segments: tuple[Segment, ...]) -> str:
    first = segments[0]
    files = f"-{len(segments)}" if len(segments) > 1 else ""
    return f"{seq:016d}-{first.fingerprint.id}-{first.start}-{first.end}{files}{ENTRY_SUFFIX}"


@dataclass(frozen=True, slots=True)
class _NameParts:
    seq: int
    fingerprint_id: str | None = None
    start: int | None = None
    end: int | None = None
    files: int = 1


def name_parts(name: str) -> _NameParts:
    """Sequence number, first fingerprint id and range, and file count from an
    entry's name (None: not there)."""
    parts = name.removesuffix(ENTRY_SUFFIX).split("-")
    seq = int(parts[0])
    if len(parts) not in (4, 5) or not all(p.isdigit() for p in parts[2:]):
        return _NameParts(seq)
    files = int(parts[4]) if len(parts) == 5 else 1
    return _NameParts(seq, parts[1], int(parts[2]), int(parts[3]), files)


def header_marker(header: dict[str, Any]) -> Marker | None:
    raw = header.get("end_marker")
    return None if raw is None else Marker.from_json(raw)


def damaged_entry(path: Path, exc: Exception) -> DamagedEntry:
    """What a damaged entry's header, or failing that its name, says it held."""
    header = exc.header if isinstance(exc, SpoolCorruptError) else None
    if header is None:
        # An entry of several files repeats its header at its end.
        with contextlib.suppress(OSError, SpoolCorruptError):
            header = decode_trailer(path.read_bytes())
    if header is not None:
        with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
            return DamagedEntry.from_header(path, str(exc), header)
    try:
        name = name_parts(path.name)
    except ValueError:
        return DamagedEntry(path, str(exc), fingerprint_id=None, start=None, end=None)
    return DamagedEntry(
        path,
        str(exc),
        fingerprint_id=name.fingerprint_id,
        start=name.start,
        end=name.end,
        unknown_files=name.files - 1,
    )
