"""Retention and the disk guard at run time: survey, decide, delete, account for it.

Every ``disk.check_interval_secs`` the rotated files the sources' globs match
are surveyed, the filesystems holding them (and the state directory) measured,
and :func:`shipper.retention.choose` decides. Shipped files are deleted; an
unshipped one only above the critical watermark with ``on_critical =
"delete_unshipped"``, and then only after a gap record naming the exact lost
range is durable in the spool (it is uploaded like a batch).
"""

from __future__ import annotations

__all__ = ["DiskGuard", "GuardHooks", "GuardSnapshot"]

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipper.config import Settings
from shipper.fsutil import printable_path
from shipper.logs import ThrottledLog
from shipper.retention import (
    Deletion,
    DiskUsage,
    InodeKey,
    Loss,
    RotatedFile,
    StreamFacts,
    choose,
    disk_usage,
    measure_loss,
    survey,
)
from shipper.shipped import ShippedIndex
from shipper.sources.checkpoints import Checkpoint
from shipper.sources.discovery import discover
from shipper.spool import SpoolEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardSnapshot:
    """The reader's view, copied on the event loop for a survey in a thread."""

    known: Mapping[str, Checkpoint]
    #: Inodes followed as live files (open, parked, or just created): never deleted.
    live: set[InodeKey]
    #: Rotated files still being read, with their checkpoints.
    open_rotated: Mapping[InodeKey, Checkpoint]


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


class DiskGuard:
    def __init__(self, settings: Settings, index: ShippedIndex, hooks: GuardHooks) -> None:
        self.settings = settings
        self.index = index
        self.hooks = hooks
        self.counters: Counter[str] = Counter()
        #: The last measure of each filesystem watched, by device.
        self.usage: dict[int, DiskUsage] = {}
        #: Filesystems still above the critical watermark, by their path: not ready.
        self.critical: dict[str, float] = {}
        self._streams: dict[tuple[int, int, int, int], StreamFacts] = {}
        self._alerts = ThrottledLog(log, interval_secs=60.0, level=logging.ERROR)

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
        """One pass: measure, decide, delete."""
        settings = self.settings
        found = await asyncio.to_thread(discover, settings.sources, compressed=True)
        snapshot = self.hooks.guard_snapshot()
        files = await asyncio.to_thread(
            survey,
            found,
            known=snapshot.known,
            index=self.index,
            live=snapshot.live,
            open_rotated=snapshot.open_rotated,
            streams=self._streams,
        )
        self.usage = await asyncio.to_thread(self._measure, files)
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
            quiet_secs={name: s.rotate_wait_secs for name, s in settings.sources.items()},
        )
        for deletion in plan.deletions:
            await self._delete(deletion)
        if plan.deletions:
            self.usage = await asyncio.to_thread(self._measure, files)
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

    def _measure(self, files: list[RotatedFile]) -> dict[int, DiskUsage]:
        """Every filesystem holding a rotated file, and the state directory's."""
        places = {str(self.settings.state_dir)}
        places.update(str(Path(f.path).parent) for f in files)
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
        go between two of their steps, never in the middle of one.
        """
        file = deletion.file
        async with self.hooks.reader_paused():
            if not await asyncio.to_thread(_unchanged, file):
                return  # written or replaced since the survey: judged again next pass
            loss, gap = None, None
            if not file.shipped:
                known = list(self.hooks.guard_snapshot().known.values())
                try:
                    loss = await asyncio.to_thread(measure_loss, file, known)
                    if loss.end > loss.start:
                        gap = await asyncio.to_thread(
                            self.hooks.seal_gap, file, loss, deletion.reason
                        )
                except OSError as exc:
                    # Without the record the loss could not be proven afterwards: keep it.
                    log.error(
                        "cannot record the loss of an unshipped file; keeping it",
                        extra={"path": printable_path(file.path), "error": str(exc)},
                    )
                    return
                if gap is not None:
                    self.hooks.submit(gap)
            fingerprint = loss.fingerprint if loss is not None else file.fingerprint
            fid = fingerprint.id if fingerprint is not None else None
            self.hooks.release_file(file.inode, fid)
            deleted = await asyncio.to_thread(_unlink_same_inode, file)
        where = {"path": printable_path(file.path), "fingerprint": fid, "reason": deletion.reason}
        if loss is None:
            self.counters[f"deleted_files_{deletion.reason}"] += 1
            self.counters[f"deleted_bytes_{deletion.reason}"] += file.size
            log.info("deleted shipped rotated file", extra={**where, "bytes": file.size})
            return
        self.counters[f"deleted_files_{deletion.reason}"] += 1
        if gap is None:
            log.warning(
                "deleted a rotated file not yet delivered: disk above critical_watermark;"
                " nothing lost, its lines are all sealed in the spool",
                extra={**where, "bytes": file.size, "deleted": deleted},
            )
            return
        self.counters["lost_files"] += 1
        self.counters["lost_lines"] += loss.lines
        self.counters["lost_bytes"] += loss.end - loss.start
        log.error(
            "deleted an unshipped rotated file: disk above critical_watermark"
            ' (disk.on_critical = "delete_unshipped"); its unshipped lines are lost',
            extra={
                **where,
                "start": loss.start,
                "end": loss.end,
                "lines": loss.lines,
                "gap_key": gap.key,
                "deleted": deleted,
            },
        )


def _unchanged(file: RotatedFile) -> bool:
    """Whether the name still names the file as it was judged: same inode, size, mtime."""
    try:
        st = os.lstat(file.path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
        file.dev,
        file.ino,
        file.size,
        file.mtime_ns,
    )


def _unlink_same_inode(file: RotatedFile) -> bool:
    try:
        st = os.lstat(file.path)
        if (st.st_dev, st.st_ino) != file.inode:
            return False
        os.unlink(file.path)
    except FileNotFoundError:
        return False
    return True
