"""The spool: a durable journal of sealed batches, the source of truth for recovery.

An entry is written to a temp file, fsynced, renamed into place and its
directory fsynced; only then do the file positions it covers advance. So a
crash leaves either a complete entry or a temp file, never a half-entry under
a final name. Temp files found on start are torn writes and are discarded: the
lines they held were never checkpointed and are read again.

An entry damaged after it was renamed (the disk, not a crash) covers lines
whose checkpoint has already moved past them. Its header is checked on its
own, and its name repeats the file and byte range, so the range is known even
when the rest is unreadable: the daemon reads those lines again from the file.

What is set aside (``quarantine/``: batches the store refused for good;
``corrupt/``: damaged entries) is not counted in ``spool.max_bytes`` (it must
not stop the reading) but is bounded on its own, by age and size: see
:data:`QUARANTINE_BOUND` and :data:`CORRUPT_BOUND`.

Every directory here is the daemon's alone (mode 0700), and every rename,
new name and deletion is fsynced into its directory.

Entry layout (integers big-endian):
``MAGIC | u32 header length | header JSON | sha256(header JSON) | body``; the
header holds the body's length and SHA-256. Name:
``<seq>-<fingerprint id>-<start>-<end>.entry`` after the entry's first file range,
with ``-<files>`` before the suffix when it holds ranges of several files.
"""

from __future__ import annotations

from shipper.spool.entry import (
    ENTRY_SUFFIX,
    SPOOL_FORMAT_VERSION,
    DamagedEntry,
    SpoolEntry,
    damaged_entry,
    decode_entry,
    encode_entry,
    entry_name,
    header_marker,
    name_parts,
)

__all__ = ["CORRUPT_BOUND", "QUARANTINE_BOUND", "SetAsideBound", "Spool"]

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shipper.batch.pack import PackedBatch
from shipper.batch.segment import Segment
from shipper.errors import SpoolCorruptError
from shipper.files.dirs import PRIVATE_DIR_MODE, make_dirs, narrow_mode
from shipper.files.durable import fsync_dir, write_synced
from shipper.units import MiB, format_size

log = logging.getLogger(__name__)

CORRUPT_DIR = "corrupt"
QUARANTINE_DIR = "quarantine"
_DAY_SECS = 86400.0


@dataclass(frozen=True, slots=True)
class SetAsideBound:
    """How much one directory of set-aside entries keeps; the oldest go first."""

    #: Past this, the oldest are dropped; never the one just set aside, so the
    #: latest is there to look at even when it alone is larger.
    max_bytes: int
    #: Entries set aside longer ago than this are dropped.
    max_age_secs: float


#: Batches the store refused for good: the only copy of their lines, kept a month
#: for an operator to look at (or ship by hand). A store that refuses every write is
#: not quarantined into (see ``uploader.QUARANTINE_IN_A_ROW``), so this fills slowly.
QUARANTINE_BOUND = SetAsideBound(max_bytes=256 * MiB, max_age_secs=30 * _DAY_SECS)
#: Damaged entries, kept to look at only: their lines were read again from their files.
CORRUPT_BOUND = SetAsideBound(max_bytes=64 * MiB, max_age_secs=7 * _DAY_SECS)


class Spool:
    """Owns ``state_dir/spool``. Methods block on disk I/O: call them from a thread."""

    def __init__(
        self,
        directory: Path,
        *,
        quarantine_bound: SetAsideBound = QUARANTINE_BOUND,
        corrupt_bound: SetAsideBound = CORRUPT_BOUND,
    ) -> None:
        self.directory = directory
        self._next_seq = 1
        #: Bytes of entries on disk; seals and deliveries run in different threads.
        self.used_bytes = 0
        self.entry_count = 0
        self._lock = threading.Lock()
        self._bounds = {QUARANTINE_DIR: quarantine_bound, CORRUPT_DIR: corrupt_bound}
        #: ``pruned_entries_<dir>`` and ``pruned_bytes_<dir>``: set-aside entries dropped.
        self.counters: Counter[str] = Counter()
        # Quarantines come from every upload thread: one setting aside or pruning at a
        # time, so a pruning never sees an entry's reason without the entry.
        self._set_aside_lock = threading.RLock()

    def recover(self) -> tuple[list[SpoolEntry], list[DamagedEntry]]:
        """Discard torn writes; return the good entries in seal order, and the damaged.

        Damaged entries stay where they are until their lines are read again
        (:meth:`set_aside` then moves them to ``corrupt/``). What was set aside
        earlier is pruned to its bounds.
        """
        make_dirs(self.directory, PRIVATE_DIR_MODE)
        self._make_private()
        entries: list[SpoolEntry] = []
        damaged: list[DamagedEntry] = []
        last_seq = 0
        for path in sorted(self.directory.iterdir()):
            if path.name.startswith("."):
                # A temp file: the crash came before its rename, so its lines were never
                # checkpointed and will be read again.
                log.warning("discarding torn spool write", extra={"path": str(path)})
                path.unlink()
                continue
            if not path.name.endswith(ENTRY_SUFFIX) or not path.is_file():
                continue
            try:
                entry = self._load(path)
            except (SpoolCorruptError, KeyError, TypeError, ValueError) as exc:
                damaged.append(damaged_entry(path, exc))
                with contextlib.suppress(ValueError):
                    last_seq = max(last_seq, name_parts(path.name).seq)
                continue
            entries.append(entry)
            last_seq = max(last_seq, entry.seq)
        entries.sort(key=lambda e: e.seq)
        self._next_seq = last_seq + 1
        self.used_bytes = sum(e.size for e in entries)
        self.entry_count = len(entries)
        fsync_dir(self.directory)
        for name in self._bounds:
            self._prune(name)
        return entries, damaged

    def _make_private(self) -> None:
        """Narrow what an older version made under a wider umask (batches are log
        contents). Best effort: a directory owned by another user stays as it is."""
        for directory in (self.directory, *(self.directory / n for n in self._bounds)):
            try:
                if directory.is_dir() and narrow_mode(directory, PRIVATE_DIR_MODE):
                    log.info("spool directory made private (0700)", extra={"path": str(directory)})
            except OSError as exc:
                log.warning(
                    "cannot make a spool directory private",
                    extra={"path": str(directory), "error": str(exc)},
                )

    def damaged(self, entry: SpoolEntry, exc: SpoolCorruptError) -> DamagedEntry:
        """An entry found damaged when it was read for upload: out of the count, kept
        in place until its lines are read again."""
        self._account(-entry.size, -1)
        first = entry.segments[0]
        return DamagedEntry(
            path=entry.path,
            reason=str(exc),
            fingerprint_id=first.fingerprint.id,
            start=first.start,
            end=first.end,
            fingerprint=first.fingerprint,
            key=entry.key,
            source=entry.source,
            file_path=first.path,
            first_time=entry.first_time,
            codec=entry.codec,
            end_marker=first.end_marker or entry.end_marker,
            others=entry.segments[1:],
        )

    def set_aside(self, damaged: DamagedEntry) -> None:
        """Move a damaged entry out of the spool, keeping it for inspection (within
        :data:`CORRUPT_BOUND`)."""
        corrupt = self.directory / CORRUPT_DIR
        make_dirs(corrupt, PRIVATE_DIR_MODE)
        target = corrupt / damaged.path.name
        with contextlib.suppress(FileNotFoundError):
            damaged.path.replace(target)
            _mark_set_aside_now(target)
        fsync_dir(corrupt)
        fsync_dir(self.directory)
        self._prune(CORRUPT_DIR, keep=_item_name(target.name))

    def quarantine(self, entry: SpoolEntry, *, reason: str) -> Path:
        """Move an entry the store will never accept to ``quarantine/``, with why.

        Its lines were read and checkpointed: this is where they are now, whole,
        beside a ``.reason.json`` naming the key, the file range and the error.
        """
        directory = self.directory / QUARANTINE_DIR
        make_dirs(directory, PRIVATE_DIR_MODE)
        first = entry.segments[0]
        note = {
            "key": entry.key,
            "source": entry.source,
            "path": first.path,
            "fingerprint": first.fingerprint.id,
            "start": first.start,
            "end": first.end,
            "lines": entry.lines,
            "other_files": [s.to_json() for s in entry.segments[1:]],
            "reason": reason,
            "quarantined_at": time.time(),
        }
        # Named by key: spool sequence numbers restart, keys never name two batches.
        name = hashlib.sha256(entry.key.encode()).hexdigest()[:32]
        target = directory / f"{name}{ENTRY_SUFFIX}"
        with self._set_aside_lock:
            write_synced(directory / f"{name}.reason.json", orjson.dumps(note) + b"\n")
            entry.path.replace(target)
            _mark_set_aside_now(target)
            fsync_dir(directory)
            fsync_dir(self.directory)
            self._account(-entry.size, -1)
            self._prune(QUARANTINE_DIR, keep=name)
        return target

    def _prune(self, name: str, *, keep: str | None = None) -> None:
        """Drop what ``name/`` holds past its bound, oldest first: entries set aside
        longer ago than its age, then while it is over its size (never ``keep``, the
        entry just set aside). Each drop is counted and logged with what it held.

        Never raises: the entry it follows is set aside already, and a failure here
        must not make the caller retry that (the next set-aside tries again).
        """
        try:
            self._prune_or_raise(name, keep)
        except OSError as exc:
            log.warning(
                "cannot prune set-aside spool entries",
                extra={"path": str(self.directory / name), "error": str(exc)},
            )

    def _prune_or_raise(self, name: str, keep: str | None) -> None:
        bound = self._bounds[name]
        directory = self.directory / name
        with self._set_aside_lock:
            items = _set_aside_items(directory)
            total = sum(item.size for item in items)
            now = time.time()
            dropped = False
            for item in items:
                if now - item.mtime > bound.max_age_secs:
                    why = f"set aside more than {bound.max_age_secs / _DAY_SECS:g} days ago"
                elif total > bound.max_bytes and item.name != keep:
                    why = f"{name}/ holds more than {format_size(bound.max_bytes)}"
                else:
                    continue
                self._drop(name, item, why)
                total -= item.size
                dropped = True
            if dropped:
                fsync_dir(directory)

    def _drop(self, name: str, item: _SetAsideItem, why: str) -> None:
        note = _reason_note(item)
        for path in item.paths:
            path.unlink(missing_ok=True)
        self.counters[f"pruned_entries_{name}"] += 1
        self.counters[f"pruned_bytes_{name}"] += item.size
        log.warning(
            "set-aside spool entry dropped: " + why,
            extra={
                "path": str(item.paths[0]),
                "files": [p.name for p in item.paths],
                "bytes": item.size,
                # What a quarantined batch held: its lines are in no store.
                **{f"held_{k}": v for k, v in note.items()},
            },
        )

    def _load(self, path: Path) -> SpoolEntry:
        data = path.read_bytes()
        header, _ = decode_entry(data)
        return self._entry(path, header, len(data))

    @staticmethod
    def _entry(
        path: Path,
        header: dict[str, Any],
        size: int,
        segments: tuple[Segment, ...] | None = None,
    ) -> SpoolEntry:
        """The entry ``header`` describes; ``segments`` when they are at hand already."""
        return SpoolEntry(
            path=path,
            seq=name_parts(path.name).seq,
            key=str(header["key"]),
            source=str(header["source"]),
            segments=(
                tuple(Segment.from_json(s) for s in header["segments"])
                if segments is None
                else segments
            ),
            records=int(header["records"]),
            body_sha256=str(header["body_sha256"]),
            uncompressed_bytes=int(header["uncompressed_bytes"]),
            codec=str(header["codec"]),
            size=size,
            first_time=float(header.get("first_time", 0.0)),
            end_marker=header_marker(header),
            kind=str(header.get("kind", "batch")),
        )

    def seal(self, batch: PackedBatch) -> SpoolEntry:
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
        if batch.end_marker is not None:
            header["end_marker"] = batch.end_marker.to_json()
        if batch.kind != "batch":
            header["kind"] = batch.kind
        data = encode_entry(header, batch.body, trailer=len(batch.segments) > 1)
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        final = self.directory / entry_name(seq, batch.segments)
        tmp = self.directory / f".{final.name}.tmp"
        write_synced(tmp, data)
        tmp.replace(final)
        fsync_dir(self.directory)
        self._account(len(data), 1)
        return self._entry(final, header, len(data), batch.segments)

    def read_body(self, entry: SpoolEntry) -> bytes:
        """The entry's encoded body, checked again: the disk may have damaged it since."""
        _, body = decode_entry(entry.path.read_bytes())
        return bytes(body)

    def remove(self, entry: SpoolEntry) -> None:
        """Delete a delivered entry. Runs on an upload thread: one fsync of the spool
        directory per delivered batch (a batch is up to ``batch.max_bytes``), so a
        restart does not find it again and upload it a second time.

        That fsync failing is no reason to deliver the entry again: an entry that
        comes back after a crash is re-sent and answered 412, nothing more.
        """
        entry.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)
        self._account(-entry.size, -1)

    def _account(self, size: int, count: int) -> None:
        with self._lock:
            self.used_bytes += size
            self.entry_count += count


@dataclass(frozen=True, slots=True)
class _SetAsideItem:
    """One set-aside entry: its files (a quarantined batch has its ``.reason.json``)."""

    name: str
    paths: tuple[Path, ...]
    size: int
    #: When it was set aside (the newest of its files).
    mtime: float


def _mark_set_aside_now(path: Path) -> None:
    """Its age counts from now, not from its seal (see ``Spool._prune``). Best
    effort: failing, it is only dropped sooner by age."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _item_name(file_name: str) -> str:
    """``<name>.entry`` and ``<name>.reason.json`` are one item."""
    return file_name.split(".", 1)[0]


def _set_aside_items(directory: Path) -> list[_SetAsideItem]:
    """The items in ``directory``, oldest first (none when it does not exist)."""
    files: dict[str, list[tuple[Path, os.stat_result]]] = {}
    try:
        listing = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for dir_entry in listing:
        try:
            if not dir_entry.is_file(follow_symlinks=False):
                continue
            st = dir_entry.stat(follow_symlinks=False)
        except OSError:  # gone meanwhile
            continue
        files.setdefault(_item_name(dir_entry.name), []).append((Path(dir_entry.path), st))
    items = [
        _SetAsideItem(
            name=name,
            paths=tuple(sorted((p for p, _ in found), key=lambda p: p.suffix != ENTRY_SUFFIX)),
            size=sum(st.st_size for _, st in found),
            mtime=max(st.st_mtime for _, st in found),
        )
        for name, found in files.items()
    ]
    return sorted(items, key=lambda item: (item.mtime, item.name))


def _reason_note(item: _SetAsideItem) -> dict[str, Any]:
    """The key, file and range a quarantined batch held, from its ``.reason.json``."""
    for path in item.paths:
        if path.name.endswith(".reason.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                note = orjson.loads(path.read_bytes())
                if isinstance(note, dict):
                    wanted = ("key", "source", "path", "start", "end", "lines")
                    return {k: note[k] for k in wanted if k in note}
    return {}
