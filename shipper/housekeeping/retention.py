"""Retention and the disk guard: which rotated files may be deleted, and in what order.

A file is a candidate only once rotated: a plain file renamed away from where
it was first found (``app.log`` → ``app.log.1``), a copytruncate copy, one read
to its end after its rotation, or a compressed rotation. The live file, a file
never identified, or one we cannot tell apart is never touched.

"Shipped" is proven, not assumed: the ledger's delivered ranges cover the file
from byte 0 to its length without a hole, and the file's last bytes have the
checksum recorded with the delivery of that end (see :mod:`shipper.state.delivered`).

:func:`survey` looks at the files (blocking I/O: run it in a thread);
:func:`choose` is pure and decides what goes.
"""

from __future__ import annotations

from shipper.housekeeping.loss import READ_BYTES, Loss, count_lines, lines_between, sealed_in_stream

__all__ = [
    "Deletion",
    "DiskUsage",
    "GuardPlan",
    "RotatedFile",
    "StreamFacts",
    "choose",
    "disk_usage",
    "measure_loss",
    "survey",
]

import os
import stat
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shipper.errors import DecompressionRefusedError
from shipper.files.confined import open_beneath, split_beneath, stat_beneath
from shipper.files.durable import InodeKey, printable_path
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import MARKER_BYTES, Pread, marker_from
from shipper.state.delivered import ShippedIndex
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.decompress import DecompressedStream, Refusal, is_compressed


@dataclass(frozen=True, slots=True)
class RotatedFile:
    #: As found (may hold surrogate escapes): the name to delete.
    path: str
    source: str
    dev: int
    ino: int
    #: Bytes on disk (the compressed size for a compressed file).
    size: int
    mtime: float
    mtime_ns: int
    #: What deleting it frees (allocated blocks).
    disk_bytes: int
    compressed: bool
    #: Held open by the reader, still being read: it frees space only once closed.
    open: bool
    #: The file whose lines it holds, when known.
    fingerprint: Fingerprint | None
    #: The length of its content: its size, or the decompressed length.
    length: int
    #: Proven delivered, every byte of it.
    shipped: bool
    #: A compressed file that expands too far to be a log: never deleted, since its
    #: content cannot be known (proven shipped, or counted as lost).
    refused: Refusal | None = None

    @property
    def inode(self) -> InodeKey:
        return (self.dev, self.ino)


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """What a compressed file decompresses to (cached by inode, size and mtime)."""

    length: int
    head: bytes
    #: The last bytes of the content (up to MARKER_BYTES).
    tail: bytes
    damage: str | None
    #: Read only this far: it expands too far to be a log.
    refused: Refusal | None = None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """One filesystem, as ``df`` reports it: used of (used + available to us)."""

    path: str
    used: int
    available: int

    @property
    def ratio(self) -> float:
        return used_ratio(self.used, self.available)


def used_ratio(used: int, available: int) -> float:
    """The fraction in use, as ``df`` counts it (blocks reserved for root left out)."""
    total = used + available
    return used / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Deletion:
    file: RotatedFile
    #: max_age, max_total_bytes, high_watermark or critical_watermark.
    reason: str


@dataclass(slots=True)
class GuardPlan:
    deletions: list[Deletion] = field(default_factory=list)
    #: Filesystems (by device) still above the critical watermark after the plan.
    critical: dict[int, float] = field(default_factory=dict)


def disk_usage(path: str) -> DiskUsage:
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return DiskUsage(path, used, st.f_bavail * st.f_frsize)


def survey(
    found: Sequence[tuple[str, str]],
    *,
    known: Mapping[str, Checkpoint],
    index: ShippedIndex,
    live: set[InodeKey],
    open_files: Mapping[InodeKey, tuple[Checkpoint, bool]],
    streams: dict[tuple[int, int, int, int], StreamFacts],
    bases: Mapping[str, Sequence[str]],
    decompress: bool = True,
) -> list[RotatedFile]:
    """The rotated files among ``found`` (``(source, path)``, compressed ones included).

    ``known`` are checkpoints (copies: this runs in a thread), ``live`` inodes
    never to judge (just created, waiting to be opened), ``open_files`` the files
    the reader holds, with whether it knows them rotated. ``streams`` caches what
    compressed files decompress to.

    ``bases`` are each source's glob base directories: a candidate lies beneath
    one of its source's, reached without any symlink below it (a symlinked file
    or directory may lead anywhere: never a candidate).

    Without ``decompress`` compressed files are left out, unread: the caller knows
    nothing can be deleted, and a compressed file is untrusted input.
    """
    surveyor = _Surveyor(known, index, open_files, streams)
    result: list[RotatedFile] = []
    seen: set[tuple[int, int, int, int]] = set()
    for source, path in found:
        where = split_beneath(path, bases.get(source, ()))
        if where is None:
            continue
        try:
            st = stat_beneath(*where)
            if not stat.S_ISREG(st.st_mode):
                continue
            inode = (st.st_dev, st.st_ino)
            if inode in live:
                continue
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            seen.add(key)
            found_file: RotatedFile | None
            if is_compressed(path):
                found_file = surveyor.compressed(path, source, st) if decompress else None
            else:
                found_file = surveyor.plain(path, source, st, where)
        except OSError:
            continue  # gone or unreadable: nothing to decide about it now
        if found_file is not None:
            result.append(found_file)
    for stale in streams.keys() - seen:
        del streams[stale]
    return result


def _rotated(
    path: str,
    source: str,
    st: os.stat_result,
    *,
    compressed: bool,
    opened: bool,
    fingerprint: Fingerprint | None,
    length: int,
    shipped: bool,
    refused: Refusal | None = None,
) -> RotatedFile:
    return RotatedFile(
        path=path,
        source=source,
        dev=st.st_dev,
        ino=st.st_ino,
        size=st.st_size,
        mtime=st.st_mtime,
        mtime_ns=st.st_mtime_ns,
        disk_bytes=st.st_blocks * 512,
        compressed=compressed,
        open=opened,
        fingerprint=fingerprint,
        length=length,
        shipped=shipped,
        refused=refused,
    )


class _Surveyor:
    """Judges one found file at a time against the checkpoints and the ledger."""

    def __init__(
        self,
        known: Mapping[str, Checkpoint],
        index: ShippedIndex,
        open_files: Mapping[InodeKey, tuple[Checkpoint, bool]],
        streams: dict[tuple[int, int, int, int], StreamFacts],
    ) -> None:
        self.index = index
        self.open_files = open_files
        self.streams = streams
        self.by_inode: dict[InodeKey, list[Checkpoint]] = defaultdict(list)
        for checkpoint in known.values():
            fp = checkpoint.fingerprint
            self.by_inode[(fp.dev, fp.ino)].append(checkpoint)
        self.head_bytes = max(
            [index.longest_head, *(c.fingerprint.head_len for c in known.values())], default=0
        )

    def plain(
        self, path: str, source: str, st: os.stat_result, where: tuple[str, Sequence[str]]
    ) -> RotatedFile | None:
        inode = (st.st_dev, st.st_ino)
        held = self.open_files.get(inode)
        being_read = held[0] if held is not None else None
        candidates = [being_read] if being_read is not None else self.by_inode.get(inode, [])
        if not candidates:
            return None  # never identified: it may be a live file not yet read
        base, names = where
        fd = open_beneath(base, names, shown=path)
        try:
            if os.fstat(fd).st_ino != st.st_ino:
                return None  # replaced since the stat: judged again next pass
            longest = max(c.fingerprint.head_len for c in candidates)
            head = os.pread(fd, longest, 0)
            matching = [c for c in candidates if c.fingerprint.matches_head(head)]
            if not matching:
                return None  # other content on a known inode: not ours to judge
            # The newest generation is the content there now (an older one was
            # truncated away and may well be finished).
            checkpoint = max(matching, key=lambda c: c.fingerprint.generation)
            known_rotated = held is not None and held[1]
            left_behind = checkpoint.finished or checkpoint.copy_of is not None
            if not (known_rotated or left_behind or _moved(path, checkpoint.origin, inode)):
                return None  # the live file

            def pread(length: int, offset: int) -> bytes:
                return os.pread(fd, length, offset)

            shipped = _proven(self.index, checkpoint.fingerprint.id, st.st_size, pread)
        finally:
            os.close(fd)
        return _rotated(
            path,
            source,
            st,
            compressed=False,
            opened=being_read is not None,
            fingerprint=checkpoint.fingerprint,
            length=st.st_size,
            shipped=shipped,
        )

    def compressed(self, path: str, source: str, st: os.stat_result) -> RotatedFile:
        inode = (st.st_dev, st.st_ino)
        held = self.open_files.get(inode)
        being_read = held[0] if held is not None else None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        facts = self.streams.get(key)
        if facts is None or len(facts.head) < min(self.head_bytes, facts.length):
            facts = self.streams[key] = read_stream(path, self.head_bytes)
        shipped_as: Fingerprint | None = None
        if being_read is None and facts.damage is None and facts.refused is None:
            for candidate in self.index.with_head(facts.head):
                marker = candidate.proves(facts.length)
                if marker is not None and marker_from(facts.tail, facts.length) == marker:
                    shipped_as = candidate.fingerprint
                    break
        return _rotated(
            path,
            source,
            st,
            compressed=True,
            opened=being_read is not None,
            fingerprint=shipped_as or (being_read.fingerprint if being_read else None),
            length=facts.length,
            shipped=shipped_as is not None,
            refused=facts.refused,
        )


def _moved(path: str, origin: str, inode: InodeKey) -> bool:
    """Whether the file at ``path`` was renamed away from ``origin``, where it was first found.

    Judged by what ``origin`` names now, not by the spelling of the two paths: a
    glob through a symlink, or a config that changed how it names the directory,
    must not make the live file look rotated.
    """
    if printable_path(path) == origin:
        return False
    try:
        st = os.stat(origin)
    except FileNotFoundError:
        return True  # nothing there: renamed (and the new live file not created yet)
    except OSError:
        return False  # cannot tell: keep it
    return (st.st_dev, st.st_ino) != inode


def _proven(index: ShippedIndex, fid: str, length: int, pread: Pread) -> bool:
    shipped = index.get(fid)
    marker = None if shipped is None else shipped.proves(length)
    if marker is None:
        return False
    data = pread(marker.end - marker.start, marker.start)
    return marker_from(data, marker.end) == marker


def read_stream(path: str, head_bytes: int) -> StreamFacts:
    """Decompress ``path`` through, keeping its length, head and tail.

    Memory stays bounded whatever it expands to; one that expands too far is read
    only that far, and says so in ``refused``.
    """
    stream = DecompressedStream(path)
    try:
        head = b""
        tail = b""
        position = 0
        while True:
            data = stream.pread(READ_BYTES, position)
            if not data:
                break
            if len(head) < head_bytes:
                head += data[: head_bytes - len(head)]
            tail = (tail + data[-MARKER_BYTES:])[-MARKER_BYTES:]
            position += len(data)
        return StreamFacts(position, head, tail, stream.damage, stream.refused)
    finally:
        stream.close()


def choose(
    files: Sequence[RotatedFile],
    usage: Mapping[int, DiskUsage],
    *,
    now: float,
    max_age_secs: float | None,
    max_total_bytes: int | None,
    high_watermark: float,
    critical_watermark: float,
    delete_unshipped: bool,
    quiet_secs: Mapping[str, float],
) -> GuardPlan:
    """Decide what goes, oldest first; pure.

    Shipped files go when older than ``max_age_secs``, while all rotated files
    together exceed ``max_total_bytes``, and while their filesystem is above the
    high watermark. Unshipped ones go only above the critical watermark, and only
    with ``delete_unshipped``. Files written in the last ``quiet_secs`` (per source:
    its ``rotate_wait_secs``) are left alone: a rotation may still be under way.
    A refused compressed file (a compression bomb) is never deleted: what it holds
    can be neither proven shipped nor recorded as lost.
    """
    plan = GuardPlan()
    settled = [
        f for f in files if now - f.mtime >= quiet_secs.get(f.source, 0.0) and f.refused is None
    ]
    oldest_first = sorted(settled, key=lambda f: (f.mtime, f.path))
    deletable = [f for f in oldest_first if f.shipped]
    chosen: dict[InodeKey, Deletion] = {}

    def take(file: RotatedFile, reason: str) -> None:
        chosen.setdefault(file.inode, Deletion(file, reason))

    if max_age_secs is not None:
        for file in deletable:
            if now - file.mtime > max_age_secs:
                take(file, "max_age")
    if max_total_bytes is not None:
        total = sum(f.size for f in files if f.inode not in chosen)
        for file in deletable:
            if total <= max_total_bytes:
                break
            if file.inode not in chosen:
                take(file, "max_total_bytes")
                total -= file.size
    used = {dev: u.used for dev, u in usage.items()}
    for deletion in chosen.values():
        if deletion.file.dev in used:
            used[deletion.file.dev] -= deletion.file.disk_bytes

    def ratio(dev: int) -> float:
        # What a deletion frees becomes available: the total stays.
        freed = usage[dev].used - used[dev]
        return used_ratio(used[dev], usage[dev].available + freed)

    for dev in usage:
        for file in (f for f in deletable if f.dev == dev):
            if ratio(dev) <= high_watermark:
                break
            if file.inode not in chosen:
                take(file, "high_watermark")
                used[dev] -= file.disk_bytes
        if ratio(dev) > critical_watermark and delete_unshipped:
            for file in (f for f in oldest_first if f.dev == dev and not f.shipped):
                if ratio(dev) <= critical_watermark:
                    break
                if file.inode not in chosen:
                    take(file, "critical_watermark")
                    used[dev] -= file.disk_bytes
        if ratio(dev) > critical_watermark:
            plan.critical[dev] = ratio(dev)
    plan.deletions = list(chosen.values())
    return plan


def measure_loss(file: RotatedFile, known: Sequence[Checkpoint], fd: int) -> Loss:
    """Exactly which bytes and lines of ``file`` were never sealed: what deleting it loses.

    Blocking (reads the file through ``fd``, or decompresses it). ``known`` are the
    checkpoints: the sealed end of the file it holds is where the loss starts. A
    compressed file is matched to a checkpoint by its first line and markers; one
    matching none is lost whole.
    """
    if file.compressed:
        stream = DecompressedStream(file.path)
        try:
            fingerprint, start = sealed_in_stream(stream, known, file.length)
            lines = count_lines(stream.pread, start, file.length)
            if stream.refused is not None:
                # The loss cannot be counted: never deleted then (see choose()).
                raise DecompressionRefusedError(
                    stream.refused.reason,
                    compressed=stream.refused.compressed_offset,
                    decompressed=stream.refused.decompressed_offset,
                )
            return Loss(fingerprint, start, file.length, lines)
        finally:
            stream.close()
    fid = file.fingerprint.id if file.fingerprint is not None else None
    sealed = next((c.offset for c in known if c.fingerprint.id == fid), 0)
    return lines_between(fd, file.fingerprint, min(sealed, file.length), file.length)
