"""Retention and the disk guard at run time: survey, decide, delete, account for it.

Every ``disk.check_interval_secs`` the rotated files the sources' globs match
are surveyed, the filesystems holding them (and the state directory) measured,
and :func:`shipper.housekeeping.retention.choose` decides. Shipped files are deleted; an
unshipped one only above the critical watermark with ``on_critical =
"delete_unshipped"``, and then only after a gap record naming the exact lost
range is durable in the spool (it is uploaded like a batch).
"""

from __future__ import annotations

__all__ = ["DiskGuard", "GuardHooks", "GuardSnapshot"]

import asyncio
import errno
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from shipper.config import Settings
from shipper.errors import DecompressionRefusedError
from shipper.files.confined import open_beneath, split_beneath, unlink_beneath
from shipper.files.durable import InodeKey, printable_path
from shipper.files.fingerprint import Fingerprint
from shipper.housekeeping.loss import Loss, lines_between
from shipper.housekeeping.retention import (
    Deletion,
    DiskUsage,
    RotatedFile,
    StreamFacts,
    choose,
    disk_usage,
    measure_loss,
    survey,
)
from shipper.logs import ThrottledLog
from shipper.spool.entry import SpoolEntry
from shipper.state.delivered import ShippedIndex
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import RefusedFiles
from shipper.tail.globs import directories, discover, glob_base, watch_roots

log = logging.getLogger(__name__)

#: A directory on the way to a file to delete is gone, or was swapped for a symlink.
_WALK_REFUSED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


@dataclass(frozen=True, slots=True)
class GuardSnapshot:
    """The reader's view, copied on the event loop for a survey in a thread."""

    known: Mapping[str, Checkpoint]
    #: Inodes just created or waiting to be opened: never judged.
    live: set[InodeKey]
    #: Files the reader holds open: their checkpoints, and whether it knows them rotated.
    open_files: Mapping[InodeKey, tuple[Checkpoint, bool]]


#: With nothing to delete, how often the guard looks again for the directories the
#: logs are in (a full glob: it costs O(files), so not at every pass).
DIRECTORIES_REFRESH_SECS = 60.0


class GuardHooks(Protocol):
    """What the guard needs from the daemon."""

    def guard_snapshot(self) -> GuardSnapshot: ...

    def reader_paused(self) -> AbstractAsyncContextManager[None]:
        """Hold the reader and the scanner between steps while files are let go."""
        ...

    def release_file(self, inode: InodeKey, fid: str | None) -> None:
        """Stop following a file about to be deleted: close it, mark it finished."""
        ...

    def seal_gap(self, file: RotatedFile, loss: Loss, reason: str) -> SpoolEntry:
        """Spool the record of a loss (blocking); the caller queues its upload."""
        ...

    def submit(self, entry: SpoolEntry) -> None: ...

    def still_present(self, fids: set[str]) -> None:
        """These files' lines are still on disk (a compressed rotation, say): keep their
        state, delivered ranges included, as long as that proves them shipped."""
        ...


class DiskGuard:
    def __init__(
        self,
        settings: Settings,
        index: ShippedIndex,
        hooks: GuardHooks,
        *,
        refused: RefusedFiles | None = None,
    ) -> None:
        self.settings = settings
        self.index = index
        self.hooks = hooks
        self.counters: Counter[str] = Counter()
        #: Where compressed files refused as bombs are reported (the reader's too).
        self.refused = refused if refused is not None else RefusedFiles(self.counters)
        #: The last measure of each filesystem watched, by device.
        self.usage: dict[int, DiskUsage] = {}
        #: Filesystems still above the critical watermark, by their path: not ready.
        self.critical: dict[str, float] = {}
        self._streams: dict[tuple[int, int, int, int], StreamFacts] = {}
        #: The directories the globs' files were in at the last look, and when (a file
        #: may be on a filesystem mounted below a watched directory).
        self._directories: set[str] = set()
        self._directories_at = -math.inf
        # CRITICAL: "wake someone up now" (the users' guide's disk-space example).
        self._alerts = ThrottledLog(log, interval_secs=60.0, level=logging.CRITICAL)

    async def run(self) -> None:
        interval = self.settings.disk.check_interval_secs
        while True:
            try:
                await self.check()
            except Exception:
                # The guard must outlive a bug in one pass, or the disk fills unwatched.
                log.exception("disk guard pass failed; will retry")
            await asyncio.sleep(interval)

    async def check(self) -> None:
        """One pass: measure; if anything may go, survey, decide and delete."""
        now = time.monotonic()
        if now - self._directories_at >= DIRECTORIES_REFRESH_SECS:
            self._directories = await asyncio.to_thread(directories, self.settings.sources)
            self._directories_at = now
        self.usage = await asyncio.to_thread(self._measure, self._directories)
        if self._may_delete():
            await self._survey_and_delete()
        self._alert()

    async def _survey_and_delete(self) -> None:
        settings = self.settings
        found = await asyncio.to_thread(discover, settings.sources, compressed=True)
        self._directories = {os.path.dirname(path) or "." for _, path in found}
        self._directories_at = time.monotonic()
        self.usage = await asyncio.to_thread(self._measure, self._directories)
        snapshot = self.hooks.guard_snapshot()
        files = await asyncio.to_thread(
            survey,
            found,
            known=snapshot.known,
            index=self.index,
            live=snapshot.live,
            open_files=snapshot.open_files,
            streams=self._streams,
            bases=self._bases(),
            decompress=True,
        )
        for file in files:
            if file.refused is not None:
                self.refused.report(printable_path(file.path), file.refused, found_by="disk guard")
        self.hooks.still_present({f.fingerprint.id for f in files if f.fingerprint is not None})
        disk = settings.disk
        plan = choose(
            files,
            self.usage,
            now=time.time(),
            max_age_secs=settings.retention.max_age_secs,
            max_total_bytes=settings.retention.max_total_bytes,
            high_watermark=disk.high_watermark,
            critical_watermark=disk.critical_watermark,
            delete_unshipped=disk.on_critical == "delete_unshipped",
            quiet_secs={
                name: max(s.rotate_wait_secs, settings.retention.quiet_secs)
                for name, s in settings.sources.items()
            },
        )
        for deletion in plan.deletions:
            await self._delete(deletion)
        if plan.deletions:
            self.usage = await asyncio.to_thread(self._measure, self._directories)

    def _alert(self) -> None:
        disk = self.settings.disk
        self.critical = {
            u.path: u.ratio for u in self.usage.values() if u.ratio > disk.critical_watermark
        }
        for path, ratio in self.critical.items():
            kept = disk.on_critical == "keep"
            self._alerts.warn(
                "disk above critical_watermark: unshipped files are kept (disk.on_critical ="
                ' "keep"); free space or restore the store'
                if kept
                else "disk above critical_watermark with no rotated file left to delete",
                path=path,
                used_ratio=round(ratio, 4),
                critical_watermark=disk.critical_watermark,
            )

    def _bases(self) -> dict[str, list[str]]:
        """Each source's glob base directories: the only places anything is deleted in."""
        return {
            name: [glob_base(p) for p in source.include]
            for name, source in self.settings.sources.items()
        }

    def _may_delete(self) -> bool:
        """Whether this pass may delete anything, by the last measure.

        Only then are compressed files decompressed (to prove them shipped): with
        the retention limits off and every filesystem at or below the high
        watermark (the critical one is at least as high), nothing is deleted,
        so an untrusted compressed file is not even read.
        """
        retention = self.settings.retention
        if retention.max_age_secs is not None or retention.max_total_bytes is not None:
            return True
        high = self.settings.disk.high_watermark
        return any(u.ratio > high for u in self.usage.values())

    def _measure(self, directories: set[str]) -> dict[int, DiskUsage]:
        """Every filesystem holding the logs (the watched directories, and those the
        files the globs matched at the last look are in), and the state directory's."""
        places = {str(self.settings.state_dir)}
        places.update(str(root) for root in watch_roots(self.settings.sources))
        places.update(directories)
        usage: dict[int, DiskUsage] = {}
        for place in sorted(places):
            try:
                dev = os.stat(place).st_dev
                if dev not in usage:
                    usage[dev] = disk_usage(place)
            except OSError:
                continue
        return usage

    async def _delete(self, deletion: Deletion) -> None:
        """Delete one file; for an unshipped one, record the loss durably first.

        The reader and the scanner wait meanwhile, so a file they hold open is let
        go between two of their steps, never in the middle of one. The file is held
        open throughout: what is measured is what is deleted, and bytes written to
        it between the check and the unlink are found and recorded too.
        """
        file = deletion.file
        async with self.hooks.reader_paused():
            fd = await asyncio.to_thread(_open_unchanged, file, self._bases())
            if fd is None:
                return  # written or replaced since the survey: judged again next pass
            try:
                await self._delete_held(deletion, fd)
            finally:
                os.close(fd)

    async def _delete_held(self, deletion: Deletion, fd: int) -> None:
        file = deletion.file
        fingerprint = file.fingerprint
        gaps: list[tuple[Loss, SpoolEntry]] = []
        unsealed_whole = False
        if not file.shipped:
            known = list(self.hooks.guard_snapshot().known.values())
            try:
                loss = await asyncio.to_thread(measure_loss, file, known, fd)
                fingerprint = loss.fingerprint
                if loss.end > loss.start:
                    gap = await asyncio.to_thread(self.hooks.seal_gap, file, loss, deletion.reason)
                    gaps.append((loss, gap))
                else:
                    unsealed_whole = True
            except (OSError, DecompressionRefusedError) as exc:
                # Without the record the loss could not be proven afterwards: keep it.
                # (A compressed file that expands too far cannot even be counted.)
                log.error(
                    "cannot record the loss of an unshipped file; keeping it",
                    extra={"path": printable_path(file.path), "error": str(exc)},
                )
                return
        where = {
            "path": printable_path(file.path),
            "fingerprint": fingerprint.id if fingerprint is not None else None,
            "reason": deletion.reason,
        }
        deleted = await asyncio.to_thread(_unlink_same_inode, file, self._bases())
        if not deleted:
            for loss, gap in gaps:
                # Renamed in the instant between the check and the unlink: the lines are
                # still there and are shipped; the record (already durable) over-reports.
                self.hooks.submit(gap)
                log.error(
                    "a gap record was written but the file was renamed before it could be"
                    " deleted; its lines will be shipped after all",
                    extra={**where, "start": loss.start, "end": loss.end, "gap_key": gap.key},
                )
            return
        self.hooks.release_file(file.inode, where["fingerprint"])
        if not file.compressed:
            gaps += await self._written_meanwhile(deletion, fd, fingerprint)
        for _, gap in gaps:
            self.hooks.submit(gap)
        self.counters[f"deleted_files_{deletion.reason}"] += 1
        if file.shipped and not gaps:
            self.counters[f"deleted_bytes_{deletion.reason}"] += file.size
            log.info("deleted shipped rotated file", extra={**where, "bytes": file.size})
        elif unsealed_whole and not gaps:
            log.warning(
                "deleted a rotated file not yet delivered: disk above critical_watermark;"
                " nothing lost, its lines are all sealed in the spool",
                extra={**where, "bytes": file.size},
            )
        for loss, gap in gaps:
            self.counters["lost_files"] += 1
            self.counters["lost_lines"] += loss.lines
            self.counters["lost_bytes"] += loss.end - loss.start
            log.error(
                "deleted an unshipped rotated file: its unshipped lines are lost"
                " (the gap record names them)",
                extra={
                    **where,
                    "start": loss.start,
                    "end": loss.end,
                    "lines": loss.lines,
                    "gap_key": gap.key,
                },
            )

    async def _written_meanwhile(
        self, deletion: Deletion, fd: int, fingerprint: Fingerprint | None
    ) -> list[tuple[Loss, SpoolEntry]]:
        """Bytes a writer added between the check and the unlink: lost, so recorded."""
        file = deletion.file
        try:
            size = (await asyncio.to_thread(os.fstat, fd)).st_size
            if size <= file.size:
                return []
            extra = await asyncio.to_thread(lines_between, fd, fingerprint, file.size, size)
        except OSError as exc:
            log.error(
                "cannot tell whether lines were written while a file was being deleted",
                extra={"path": printable_path(file.path), "error": str(exc)},
            )
            return []
        reason = f"{deletion.reason}; written while it was being deleted"
        try:
            gap = await asyncio.to_thread(self.hooks.seal_gap, file, extra, reason)
        except OSError as exc:
            log.error(
                "lines written while a file was being deleted are lost, and no gap record"
                " could be spooled for them",
                extra={
                    "path": printable_path(file.path),
                    "start": extra.start,
                    "end": extra.end,
                    "lines": extra.lines,
                    "error": str(exc),
                },
            )
            return []
        return [(extra, gap)]


def _open_unchanged(file: RotatedFile, bases: Mapping[str, Sequence[str]]) -> int | None:
    """Open the file judged, if its name still names it unchanged (inode, size, mtime).

    Reached from its source's base directory with no symlink followed on the way.
    """
    where = split_beneath(file.path, bases.get(file.source, ()))
    if where is None:
        return None
    try:
        fd = open_beneath(*where, shown=file.path)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
        file.dev,
        file.ino,
        file.size,
        file.mtime_ns,
    ):
        os.close(fd)
        return None
    return fd


def _unlink_same_inode(file: RotatedFile, bases: Mapping[str, Sequence[str]]) -> bool:
    """Delete the file judged, if its name still names it, beneath its source's base.

    The directory is reached from the base with no symlink followed, and the name
    checked and unlinked through that directory's descriptor: a directory swapped
    for a symlink (at any moment) makes this refuse, never delete elsewhere.
    """
    where = split_beneath(file.path, bases.get(file.source, ()))
    if where is None:
        return False
    try:
        return unlink_beneath(*where, file.inode)
    except OSError as exc:
        if exc.errno not in _WALK_REFUSED:
            raise
        log.warning(
            "not deleted: a directory on its way is gone or is now a symlink",
            extra={"path": printable_path(file.path), "error": str(exc)},
        )
        return False
