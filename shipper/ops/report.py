"""What the daemon tells about itself: readiness, the files' status, gauges, stale files."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shipper.deliver.uploader import Uploader
from shipper.housekeeping.disk_guard import DiskGuard
from shipper.ops.health import Readiness
from shipper.ops.status import FileStatus
from shipper.spool.spool import Spool
from shipper.tail.compressed import CompressedFileTailer
from shipper.tail.context import TailContext

log = logging.getLogger(__name__)

#: Uploads failing this long (any reason, none succeeding) make the daemon not ready;
#: shorter blips (a 503, a reset) are retried without flapping readiness.
STORE_FAILING_GRACE_SECS = 10.0
#: The spool this full (bytes or entries) makes the daemon not ready.
SPOOL_HIGH_WATERMARK = 0.9
#: How often (at most) live files are checked for having gone stale.
STALE_CHECK_SECS = 30.0


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, tz=timezone.utc).isoformat(timespec="seconds")


class StatusReport:
    """The source of /ready, /status, /metrics and systemd's STATUS= line."""

    def __init__(
        self,
        ctx: TailContext,
        *,
        spool: Spool,
        guard: DiskGuard,
        counters: Callable[[], dict[str, int]],
    ) -> None:
        self.ctx = ctx
        self.spool = spool
        self.guard = guard
        self.counters = counters
        self.uploader: Uploader | None = None

    @property
    def state_dir(self) -> Path:
        return self.ctx.settings.state_dir

    def readiness(self) -> Readiness:
        """Ready: started, the store taking writes, and the spool below its high watermark."""
        reasons: list[str] = []
        if not self.ctx.started:
            reasons.append("starting: recovering state and scanning sources")
        uploader = self.uploader
        now = time.time()
        if uploader is not None and uploader.access_failing_since is not None:
            since = _iso(uploader.access_failing_since)
            reasons.append(f"the store refuses writes (credentials or permissions) since {since}")
        elif (
            uploader is not None
            and uploader.failing_since is not None
            and now - uploader.failing_since >= STORE_FAILING_GRACE_SECS
        ):
            reasons.append(
                f"uploads failing ({uploader.last_failure}) since {_iso(uploader.failing_since)}"
            )
        limits = self.ctx.settings.spool
        used = max(
            self.spool.used_bytes / max(limits.max_bytes, 1),
            self.spool.entry_count / limits.max_entries,
        )
        if used >= SPOOL_HIGH_WATERMARK:
            reasons.append(f"spool {used:.0%} full: reading is paused or about to be")
        for path, ratio in sorted(self.guard.critical.items()):
            reasons.append(
                f"filesystem of {path} {ratio:.1%} full: above disk.critical_watermark"
                f" ({self.ctx.settings.disk.critical_watermark:.0%})"
            )
        return Readiness(reasons)

    def file_status(self, *, stale_only: bool = False) -> list[FileStatus]:
        """Every file open or idle now: size, how far it is shipped, when last written.

        ``stale_only``: only the stale ones, without building the others' status
        (the stale check runs every 30 s over what may be 100,000 idle files).
        """
        now, mono = time.time(), time.monotonic()
        stale_after = {name: s.stale_after_secs for name, s in self.ctx.settings.sources.items()}
        found: list[FileStatus] = []
        for active in self.ctx.files.active.values():
            tailer = active.tailer
            try:
                st = tailer.stat()
            except (OSError, AssertionError):
                continue  # closed meanwhile
            # A compressed file's decompressed size is known only once read through.
            compressed = isinstance(tailer, CompressedFileTailer)
            size = tailer.read_position if compressed else st.st_size
            found.append(
                self.status_of(
                    tailer.source,
                    tailer.path,
                    tailer.fingerprint.id,
                    size=size,
                    mtime=st.st_mtime,
                    last_read=now - (mono - tailer.last_growth),
                    state="open",
                    live=not tailer.finish_at_eof,
                    fallback_offset=tailer.offset,
                )
            )
        for parked in self.ctx.files.parked.values():
            checkpoint = parked.checkpoint
            if stale_only and (
                checkpoint.finished
                or now - parked.mtime_ns / 1e9 <= stale_after.get(checkpoint.source, float("inf"))
            ):
                continue
            found.append(
                self.status_of(
                    checkpoint.source,
                    checkpoint.path,
                    checkpoint.fingerprint.id,
                    size=parked.size,
                    mtime=parked.mtime_ns / 1e9,
                    last_read=None,
                    state="idle",
                    live=not checkpoint.finished,
                    fallback_offset=checkpoint.offset,
                )
            )
        if stale_only:
            found = [f for f in found if f.stale]
        return sorted(found, key=lambda f: (f.source, f.path))

    def status_of(
        self,
        source: str,
        path: str,
        fid: str,
        *,
        size: int,
        mtime: float,
        last_read: float | None,
        state: str,
        live: bool,
        fallback_offset: int,
    ) -> FileStatus:
        known = self.ctx.known.get(fid)
        settings = self.ctx.settings.sources.get(source)
        stale_after = settings.stale_after_secs if settings else float("inf")
        return FileStatus(
            source=source,
            path=path,
            fingerprint=fid,
            size=size,
            checkpoint=known.offset if known is not None else fallback_offset,
            last_write=mtime,
            last_read=last_read,
            state=state,
            stale=live and time.time() - mtime > stale_after,
        )

    def metric_gauges(self) -> dict[str, float | None]:
        uploader = self.uploader
        return {
            "spool_bytes": self.spool.used_bytes,
            "spool_entries": self.spool.entry_count,
            "last_success": uploader.last_success if uploader else None,
            "ready": 1.0 if self.readiness().ready else 0.0,
            "disk_critical": 1.0 if self.guard.critical else 0.0,
        }

    def filesystem_usage(self) -> dict[str, float]:
        """The used fraction of each filesystem the disk guard watches, by a path on it."""
        return {u.path: u.ratio for u in self.guard.usage.values()}

    def status(self) -> dict[str, Any]:
        """``GET /status``: files, stale sources, spool, uploads, readiness. No contents."""
        files = self.file_status()
        readiness = self.readiness()
        uploader = self.uploader
        return {
            "files": [f.to_json() for f in files],
            "stale": [f.path for f in files if f.stale],
            "spool": {
                "bytes": self.spool.used_bytes,
                "entries": self.spool.entry_count,
                "max_bytes": self.ctx.settings.spool.max_bytes,
                "max_entries": self.ctx.settings.spool.max_entries,
            },
            "uploads": {
                "queued": uploader.backlog if uploader else 0,
                "last_success": uploader.last_success if uploader else None,
                "failing_since": uploader.failing_since if uploader else None,
            },
            "readiness": {"ready": readiness.ready, "reasons": readiness.reasons},
        }

    async def watch_stale(self) -> None:
        """Log a live file that stopped being written, once, and when it starts again."""
        warned: set[str] = set()
        shortest = min(s.stale_after_secs for s in self.ctx.settings.sources.values())
        interval = min(STALE_CHECK_SECS, max(1.0, shortest / 2))
        while True:
            await asyncio.sleep(interval)
            stale = {f.fingerprint: f for f in self.file_status(stale_only=True)}
            for fid, f in stale.items():
                if fid not in warned:
                    log.warning(
                        "source file stale: not written for longer than stale_after_secs",
                        extra={"path": f.path, "source": f.source, "last_write": f.last_write},
                    )
            for fid in warned - stale.keys():
                log.info("stale source file written again", extra={"fingerprint": fid})
            warned = set(stale)

    def status_line(self) -> str:
        """systemd's one-line STATUS=: what ``systemctl status`` shows."""
        uploader = self.uploader
        queued = uploader.backlog if uploader is not None else 0
        state = "ready" if self.readiness().ready else "NOT READY"
        return (
            f"{state}; {len(self.ctx.files.active)} files open; spool {self.spool.used_bytes} bytes"
            f" in {self.spool.entry_count} batches; {queued} uploads queued"
        )
