"""The spool: a durable journal of sealed batches, the source of truth for recovery.

An entry is written to a temp file, fsynced, renamed into place and its
directory fsynced; only then do the file positions it covers advance. So a
crash leaves either a complete entry or a temp file, never a half-entry under
a final name. Temp files found on start are torn writes and are discarded: the
lines they held were never checkpointed and are read again.

Entry layout (all integers big-endian):
``MAGIC | u32 header length | header JSON | u64 body length | body | sha256(header JSON + body)``.
"""

from __future__ import annotations

__all__ = ["SPOOL_FORMAT_VERSION", "Segment", "Spool", "SpoolEntry"]

import hashlib
import logging
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shipper.errors import SpoolCorruptError
from shipper.fsutil import fsync_dir, write_synced
from shipper.sources.fingerprint import Fingerprint

if TYPE_CHECKING:
    from shipper.encoding import EncodedBatch

log = logging.getLogger(__name__)

SPOOL_FORMAT_VERSION = 1
MAGIC = b"SHPSPOOL"
ENTRY_SUFFIX = ".entry"
CORRUPT_DIR = "corrupt"
QUARANTINE_DIR = "quarantine"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Segment:
    """One file's byte range inside a batch."""

    fingerprint: Fingerprint
    path: str
    start: int
    end: int
    lines: int

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint.to_json(),
            "path": self.path,
            "start": self.start,
            "end": self.end,
            "lines": self.lines,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            path=str(data["path"]),
            start=int(data["start"]),
            end=int(data["end"]),
            lines=int(data["lines"]),
        )


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

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.segments)


def encode_entry(header: dict[str, Any], body: bytes) -> bytes:
    header_json = orjson.dumps(header)
    digest = hashlib.sha256(header_json)
    digest.update(body)
    return b"".join(
        (
            MAGIC,
            _U32.pack(len(header_json)),
            header_json,
            _U64.pack(len(body)),
            body,
            digest.digest(),
        )
    )


def decode_entry(data: bytes) -> tuple[dict[str, Any], memoryview]:
    """Check an entry's framing and checksum; return its header and body."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise SpoolCorruptError("bad magic")
    pos = len(MAGIC)
    if len(view) < pos + _U32.size:
        raise SpoolCorruptError("truncated before the header length")
    (header_len,) = _U32.unpack_from(view, pos)
    pos += _U32.size
    header_json = view[pos : pos + header_len]
    pos += header_len
    if len(view) < pos + _U64.size:
        raise SpoolCorruptError("truncated inside the header")
    (body_len,) = _U64.unpack_from(view, pos)
    pos += _U64.size
    body = view[pos : pos + body_len]
    pos += body_len
    trailer = bytes(view[pos:])
    if len(body) != body_len or len(trailer) != 32:
        raise SpoolCorruptError(f"truncated: body {len(body)} of {body_len} bytes")
    digest = hashlib.sha256(header_json)
    digest.update(body)
    if digest.digest() != trailer:
        raise SpoolCorruptError("checksum mismatch")
    try:
        header = orjson.loads(header_json)
    except orjson.JSONDecodeError as exc:
        raise SpoolCorruptError(f"unreadable header: {exc}") from exc
    if header.get("version") != SPOOL_FORMAT_VERSION:
        raise SpoolCorruptError(f"unsupported format version {header.get('version')!r}")
    return header, body


class Spool:
    """Owns ``state_dir/spool``. Methods block on disk I/O: call them from a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._next_seq = 1
        #: Bytes of entries on disk; seals and deliveries run in different threads.
        self.used_bytes = 0
        self.entry_count = 0
        self._lock = threading.Lock()

    def recover(self) -> list[SpoolEntry]:
        """Discard torn writes, set aside corrupt entries, return the good ones in seal order."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entries: list[SpoolEntry] = []
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                # A temp file: the crash came before its rename, so its lines were never
                # checkpointed and will be read again.
                log.warning("discarding torn spool write", extra={"path": str(path)})
                path.unlink()
                continue
            if not path.name.endswith(ENTRY_SUFFIX):
                continue
            try:
                entries.append(self._load(path))
            except (SpoolCorruptError, KeyError, TypeError, ValueError) as exc:
                self._set_aside(path, str(exc))
        entries.sort(key=lambda e: e.seq)
        if entries:
            self._next_seq = entries[-1].seq + 1
        self.used_bytes = sum(e.size for e in entries)
        self.entry_count = len(entries)
        fsync_dir(self.directory)
        return entries

    def set_aside(self, entry: SpoolEntry, reason: str) -> None:
        """Move a damaged entry out of the upload path, keeping it for inspection."""
        self._set_aside(entry.path, reason)
        self._account(-entry.size, -1)

    def quarantine(self, entry: SpoolEntry, *, reason: str) -> Path:
        """Move an entry the store will never accept to ``quarantine/``, with why.

        Its lines were read and checkpointed: this is where they are now, whole,
        beside a ``.reason.json`` naming the key, the file range and the error.
        """
        directory = self.directory / QUARANTINE_DIR
        directory.mkdir(exist_ok=True)
        first = entry.segments[0]
        note = {
            "key": entry.key,
            "source": entry.source,
            "path": first.path,
            "fingerprint": first.fingerprint.id,
            "start": first.start,
            "end": first.end,
            "lines": entry.lines,
            "reason": reason,
            "quarantined_at": time.time(),
        }
        # Named by key: spool sequence numbers restart, keys never name two batches.
        name = hashlib.sha256(entry.key.encode()).hexdigest()[:32]
        target = directory / f"{name}{ENTRY_SUFFIX}"
        write_synced(directory / f"{name}.reason.json", orjson.dumps(note) + b"\n")
        entry.path.replace(target)
        fsync_dir(directory)
        fsync_dir(self.directory)
        self._account(-entry.size, -1)
        return target

    def _set_aside(self, path: Path, reason: str) -> None:
        # A renamed entry that fails its checksum was damaged after it was fsynced
        # (the disk, not a crash). It is kept for inspection, never uploaded.
        corrupt = self.directory / CORRUPT_DIR
        corrupt.mkdir(exist_ok=True)
        path.replace(corrupt / path.name)
        log.error(
            "corrupt spool entry set aside",
            extra={"path": str(path), "reason": reason, "moved_to": str(corrupt)},
        )

    def _load(self, path: Path) -> SpoolEntry:
        data = path.read_bytes()
        header, _ = decode_entry(data)
        return self._entry(path, header, len(data))

    @staticmethod
    def _entry(path: Path, header: dict[str, Any], size: int) -> SpoolEntry:
        return SpoolEntry(
            path=path,
            seq=int(path.name.removesuffix(ENTRY_SUFFIX)),
            key=str(header["key"]),
            source=str(header["source"]),
            segments=tuple(Segment.from_json(s) for s in header["segments"]),
            records=int(header["records"]),
            body_sha256=str(header["body_sha256"]),
            uncompressed_bytes=int(header["uncompressed_bytes"]),
            codec=str(header["codec"]),
            size=size,
        )

    def seal(self, batch: EncodedBatch) -> SpoolEntry:
        """Write one entry durably. When this returns, the batch survives any crash."""
        header = {
            "version": SPOOL_FORMAT_VERSION,
            "key": batch.key,
            "source": batch.source,
            "segments": [s.to_json() for s in batch.segments],
            "records": batch.records,
            "body_sha256": batch.body_sha256,
            "uncompressed_bytes": batch.uncompressed_bytes,
            "codec": batch.codec,
            "first_time": batch.first_time,
        }
        data = encode_entry(header, batch.body)
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        final = self.directory / f"{seq:016d}{ENTRY_SUFFIX}"
        tmp = self.directory / f".{final.name}.tmp"
        write_synced(tmp, data)
        tmp.replace(final)
        fsync_dir(self.directory)
        self._account(len(data), 1)
        return self._entry(final, header, len(data))

    def read_body(self, entry: SpoolEntry) -> bytes:
        """The entry's encoded body, checked again: the disk may have damaged it since."""
        _, body = decode_entry(entry.path.read_bytes())
        return bytes(body)

    def remove(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)
        self._account(-entry.size, -1)

    def _account(self, size: int, count: int) -> None:
        with self._lock:
            self.used_bytes += size
            self.entry_count += count
