"""Wiring and lifecycle of ``shipper run``: recover, tail, batch, seal, upload, drain.

Data moves one way: files → chain → batcher → spool → uploader → store. The only
thing that flows back is the acknowledgement that a batch is sealed, which
moves the file's checkpoint. When the spool is full the reader stops, so the
source files are the buffer and memory stays flat.
"""

from __future__ import annotations

__all__ = ["Daemon"]

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import math
import os
import signal
import socket
import stat
import time
from collections import Counter, defaultdict
from collections.abc import (
    AsyncIterator,
    Callable,
    Container,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import watchfiles

from shipper.app.chain import build_chain
from shipper.app.recover import resume_positions
from shipper.batch.batcher import Batch, Batcher, BatchLimits
from shipper.batch.objectkey import compile_template
from shipper.batch.pack import pack_batches
from shipper.config import DEFAULT_COMPRESSION_LEVEL, Settings, load_config
from shipper.deliver.ledger import Ledger
from shipper.deliver.sinks import Sink, build_sink
from shipper.deliver.uploader import Uploader
from shipper.errors import ConfigError, StateError
from shipper.exit_codes import ExitCode
from shipper.files.confined import open_log_file
from shipper.files.dirs import PRIVATE_DIR_MODE, make_dirs
from shipper.files.durable import InodeKey, printable_path
from shipper.files.markers import Marker, remember
from shipper.housekeeping.disk_guard import DiskGuard, GuardSnapshot
from shipper.housekeeping.gaps import encode_gap
from shipper.housekeeping.retention import Loss, RotatedFile
from shipper.logs import ThrottledLog
from shipper.ops.health import HealthServer, Readiness
from shipper.ops.metrics import Metrics
from shipper.ops.sdnotify import Notifier
from shipper.ops.status import FileStatus
from shipper.spool import refill
from shipper.spool.spool import DamagedEntry, Spool, SpoolEntry
from shipper.state.delivered import ShippedIndex
from shipper.state.migration import migrate_legacy_state
from shipper.state.statedb import STATE_DB_NAME, StateDB
from shipper.tail import backfill_files
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import (
    CompressedFileTailer,
    DecompressedStream,
    Refusal,
    RefusedFiles,
    find_compressed,
)
from shipper.tail.identify import (
    ByHead,
    Identified,
    copies_found_together,
    end_of_last_line,
    find_copies,
    identify,
    identify_open,
    still_a_copy,
)
from shipper.tail.known import KnownFiles, WaitingFiles
from shipper.tail.multiline import LineJoiner, start_rule
from shipper.tail.scan import (
    Refusals,
    SourceRoots,
    discover,
    find_by_inode,
    real_parents,
    roots_of,
    selected,
    source_of,
    watch_roots,
)
from shipper.tail.tailer import FileTailer, LineChunk

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_SECS = 1.0
#: At most this stale, a file's saved ``seen_at`` (when it was last found): enough to
#: forget it in time, without writing every file's row at every scan.
SEEN_AT_SAVE_SECS = 3600.0
#: How long one hop to the reading thread goes on reading files before the event
#: loop takes their results (accepts what was sealed, starts uploads).
READ_HOP_SECS = 0.05
#: Longest the reader sleeps when idle; change events usually wake it sooner.
IDLE_WAIT_SECS = 0.25
#: Longest a file that looks like a copy still being written is held back without
#: growing. A copy being written grows until it reaches its original's markers.
COPY_HOLD_SECS = 30.0
#: Uploads failing this long (any reason, none succeeding) make the daemon not ready;
#: shorter blips (a 503, a reset) are retried without flapping readiness.
STORE_FAILING_GRACE_SECS = 10.0
#: The spool this full (bytes or entries) makes the daemon not ready.
SPOOL_HIGH_WATERMARK = 0.9
#: Wait before reading a damaged entry's lines again after a local error.
REFILL_RETRY_SECS = 10.0
#: How often systemd's STATUS= line is refreshed.
SYSTEMD_STATUS_SECS = 10.0
#: How often (at most) live files are checked for having gone stale.
STALE_CHECK_SECS = 30.0
#: After a scan, at least this many times as long without one (scans stay within
#: about 5% of a core), and at most SCAN_REST_MAX_SECS.
SCAN_REST_FACTOR = 19.0
SCAN_REST_MAX_SECS = 30.0
#: After change events fail, how long to poll before watching again.
WATCH_RESTART_SECS = 30.0
#: Bytes of an object's ``shipper-segments`` metadata (each file's range) that one
#: entry of several files may take: S3 allows 2 KB of metadata in all.
PACK_SEGMENTS_BUDGET = 1024
#: Backfill: compressed files read at once (each holds a decompressor's window).
BACKFILL_STREAMS = 16
#: At a reload, how long puts already running may take to finish: below systemd's
#: WatchdogSec (30), since no pings go out meanwhile.
RELOAD_IN_FLIGHT_SECS = 10.0


#: What a save compares to know whether a checkpoint's row must be written again.
SavedForm = tuple[object, ...]


def _saved_form(checkpoint: Checkpoint, seen_resolution: float) -> SavedForm:
    c = checkpoint
    return (
        c.fingerprint,
        c.source,
        c.path,
        c.offset,
        c.markers,
        c.finished,
        c.copy_of,
        c.origin,
        int(c.seen_at // seen_resolution),
    )


@dataclass(slots=True)
class ActiveFile:
    tailer: FileTailer
    batcher: Batcher
    inode: InodeKey
    #: The last read found no new bytes.
    at_eof: bool = False
    #: The file shrank below what was read (copytruncate): finish it, then re-identify.
    truncated: bool = False
    #: The last read or seal failed; retried, but not allowed to hold up the others.
    failing: bool = False
    #: Batches cut but not yet sealed (spool full, a failed write). They are sealed,
    #: in order, before the file is read any further.
    unsealed: list[Batch] = field(default_factory=list)
    #: Joins multiline records, when the source asks for it.
    joiner: LineJoiner | None = None
    #: The fingerprint id of the file this one is a copy of (copytruncate).
    copy_of: str | None = None
    #: Size and modification time at the last sweep: unchanged, a file at its end
    #: has nothing to read.
    stamp: tuple[int, int] | None = None
    #: Read from a position past its start (resumed after a restart, a copy
    #: continued): before its first lines go through the chain, look whether that
    #: position is inside a private key block, so its next lines are redacted.
    check_key_block: bool = False

    def lines_of(self, chunk: LineChunk) -> LineChunk:
        """Lines as records: joined into multiline records where configured."""
        return chunk if self.joiner is None else self.joiner.feed(chunk)


@dataclass(slots=True)
class ChangeEvents:
    #: Events are being received: files at their end wait for one (or the periodic
    #: sweep) instead of being read every round.
    live: bool = False
    #: Paths events named since the last round.
    dirty: set[str] = field(default_factory=set)
    #: When every file is looked at again, events or not.
    next_sweep: float = 0.0
    #: Where each source's files may live, resolved at the last scan: a file an event
    #: names is opened against these, without a realpath on the event loop.
    roots: dict[str, SourceRoots] = field(default_factory=dict)
    #: Paths to look at alone, without a scan of everything: ones written to that are
    #: not open (parked, or without a first line yet), in the order events named them.
    targets: dict[str, None] = field(default_factory=dict)
    #: Targets were named, or slots were freed for files waiting to be opened.
    targeted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class Parked:
    """A file closed at its end while idle: reopened when its size changes."""

    checkpoint: Checkpoint
    size: int
    #: A rewrite to the same size still changes the modification time.
    mtime_ns: int


@dataclass(slots=True)
class CopiesSeen:
    """What the scans know of copies (copytruncate) not yet read."""

    #: Held-back copies by inode: since when (monotonic) at the size they still have.
    held_since: dict[InodeKey, tuple[float, int]] = field(default_factory=dict)
    #: Files continued by a copy opened in the current scan.
    continued: set[str] = field(default_factory=set)
    #: Copies found beside their never-seen original (copytruncate under way at
    #: start): copy inode -> the original's fingerprint id. Held while it is read.
    paired: dict[InodeKey, str] = field(default_factory=dict)

    def forget_unseen(self, seen: set[InodeKey]) -> None:
        """Forget copies the last scan did not find (gone, or renamed out of the globs)."""
        for inode in set(self.held_since) - seen:
            del self.held_since[inode]
        for inode in set(self.paired) - seen:
            del self.paired[inode]


@dataclass(slots=True)
class SavedCheckpoints:
    """What the state database holds of the checkpoints: a save writes only the rows
    that changed, and deletes those of forgotten files."""

    #: Each checkpoint as last saved (``_saved_form``), by fingerprint id.
    forms: dict[str, SavedForm] = field(default_factory=dict)
    #: Files forgotten whose rows are still to be deleted.
    forgotten: set[str] = field(default_factory=set)
    at: float = field(default_factory=time.monotonic)
    #: When forgotten files were last looked for.
    forgot_at: float = -math.inf


@dataclass(slots=True)
class StepResult:
    entries: list[SpoolEntry] = field(default_factory=list)
    #: Markers of the sealed ends, by fingerprint id, for the checkpoints.
    markers: list[tuple[str, Marker]] = field(default_factory=list)
    got_bytes: bool = False
    truncated: bool = False
    error: OSError | None = None


def _read_through(identified: Identified) -> bool:
    """A known file a backfill already read to its end (in this run or an earlier one)."""
    known = identified.known
    return (
        known is not None
        and not identified.rewritten
        and _read_through_at([known], identified.size)
    )


def _segment_text_len(batch: Batch) -> int:
    """Bytes ``batch`` adds to an object's ``shipper-segments`` metadata (and a ``;``)."""
    return len(f"{batch.fingerprint.id}:{batch.start}-{batch.end}:{batch.lines};")


def _packs(actives: list[ActiveFile], limits: BatchLimits) -> Iterator[list[ActiveFile]]:
    """The files, in order, in groups whose one owed batch each fit one entry."""
    pack: list[ActiveFile] = []
    size = records = described = 0
    for active in actives:
        batch = active.unsealed[0]
        text = _segment_text_len(batch)
        if pack and (
            size + len(batch.body) > limits.max_bytes
            or records + batch.records > limits.max_records
            or described + text > PACK_SEGMENTS_BUDGET
        ):
            yield pack
            pack, size, records, described = [], 0, 0, 0
        pack.append(active)
        size += len(batch.body)
        records += batch.records
        described += text
    if pack:
        yield pack


def _read_through_at(candidates: Iterable[Checkpoint], size: int) -> bool:
    """The same, judged from the inode's checkpoints and size alone (nothing opened)."""
    return any(c.finished and size <= c.offset for c in candidates)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, tz=timezone.utc).isoformat(timespec="seconds")


def _log_task_stacks() -> None:
    """SIGUSR1: log where every task is waiting, to diagnose a stall without stopping."""
    for task in asyncio.all_tasks():
        frames = [
            f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
            for f in task.get_stack()
        ]
        log.warning("task stack", extra={"task": task.get_name(), "frames": frames})


def _report_crash(task: asyncio.Task[None]) -> None:
    """A background task that ends on its own is a bug: say so loudly, at once."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "background task crashed", exc_info=task.exception(), extra={"task": task.get_name()}
        )


class _AliveIds(Container[str]):
    """Fingerprint ids of files still there to be read, asked about one at a time.

    Listing them all cost O(every known file) per scan, and a scan of a few paths
    runs every time a slot frees up.
    """

    __slots__ = ("_found", "_still_to_read")

    def __init__(self, found: set[str], still_to_read: Callable[[str], bool]) -> None:
        self._found = found
        self._still_to_read = still_to_read

    def __contains__(self, fid: object) -> bool:
        return isinstance(fid, str) and (fid in self._found or self._still_to_read(fid))


class Daemon:
    def __init__(
        self, settings: Settings, *, sink: Sink | None = None, one_shot: bool = False
    ) -> None:
        self.settings = settings
        #: ``shipper backfill``: read every file to its end, deliver it all, and exit.
        self.one_shot = one_shot
        self._backfill = backfill_files.BackfillProgress()
        self.host = socket.gethostname()
        state_dir = settings.state_dir
        self.spool = Spool(state_dir / "spool")
        #: What the ledger proves delivered, per file: retention deletes by it.
        self.shipped = ShippedIndex()
        self.ledger = Ledger(StateDB(state_dir / STATE_DB_NAME), self.shipped)
        self.sink = sink or build_sink(settings.sink)
        self.keys = compile_template(
            settings.sink.key_template,
            prefix=settings.sink.prefix,
            static=settings.sink.key_fields,
            host=self.host,
            codec=settings.sink.codec,
        )
        self.limits = BatchLimits(
            settings.batch.max_bytes, settings.batch.max_records, settings.batch.max_age_secs
        )
        self.chain = build_chain(
            host=self.host,
            environ=os.environ,
            parse=settings.parse,
            enrich=settings.enrich,
            redact=settings.redact,
            sample=settings.sample,
        )
        self.known = KnownFiles()
        self.active: dict[InodeKey, ActiveFile] = {}
        self.uploader: Uploader | None = None
        self._lock_fd: int | None = None
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._wake = asyncio.Event()
        self._space_freed = asyncio.Event()
        self._rescan = asyncio.Event()
        self._checkpoints_dirty = False
        self._saved = SavedCheckpoints()
        self._persist_lock = asyncio.Lock()
        #: Files found without a complete first line yet: every write rescans until
        #: they are open, so a quick rotation cannot take them away unread.
        self._unidentified: set[str] = set()
        self._parked: dict[InodeKey, Parked] = {}
        #: Files opened the moment their creation was seen, before any scan: holding the
        #: handle keeps a file readable even if it is rotated away or deleted at once.
        self._preopened: dict[InodeKey, tuple[str, str, int]] = {}
        self._waiting_to_open = 0
        self._close_inactive = settings.close_inactive_secs
        self._max_open = settings.max_open_files
        self._had_state = False
        #: The first scan is done: the daemon is reading.
        self._started = False
        self._warnings = ThrottledLog(log, interval_secs=10.0)
        self._errors = ThrottledLog(log, interval_secs=60.0, level=logging.ERROR)
        self._copies = CopiesSeen()
        #: Files found but not opened for want of a slot, by path, in the order found:
        #: opened from the front as slots are freed, without a scan of everything.
        self._waiting = WaitingFiles()
        #: New files the last scan found waiting for a slot, to be known from their start.
        self._registered: list[Checkpoint] = []
        #: Parked files found shorter than when parked (truncated while closed).
        self._shrunk: set[InodeKey] = set()
        #: Files finished at a truncation; the next scan looks for their copies.
        self._truncated_originals: list[Checkpoint] = []
        #: The reader's own outcome counters (the chain and the uploader keep theirs).
        self._counters: Counter[str] = Counter()
        #: Damaged spool entries whose lines are to be read again.
        self._refill_plan = refill.Plan([], [], [])
        self._refill_retry_at = 0.0
        # Compressed files refused as bombs are reported once, by the reader or the guard.
        self.guard = DiskGuard(settings, self.shipped, self, refused=RefusedFiles(self._counters))
        # Held by the reader for each round and by each scan; the guard takes both to
        # let go of a file it deletes while neither is half-way through it.
        self._reading, self._scanning = asyncio.Lock(), asyncio.Lock()
        self.metrics = Metrics(self)
        self.notifier = Notifier.from_env()
        #: Set by a SIGHUP with a valid, changed config: run() returns to be run again
        #: with these settings (the state on disk carries over).
        self.reload_settings: Settings | None = None
        self._events = ChangeEvents()
        self._reloads: set[asyncio.Task[None]] = set()

    @functools.cached_property
    def _refusals(self) -> Refusals:
        """Paths the globs match that are never read (symlinks out, FIFOs, ...): each
        logged once and counted. Only the scans discover with it."""
        return Refusals()

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> ExitCode:
        if self.one_shot:
            # A backfill runs beside the daemon; its progress is in its log lines.
            return await self._run()
        health = self.settings.health
        server = HealthServer(
            health.host,
            health.port,
            self.readiness,
            status=self.status,
            metrics=self.metrics.render,
        )
        await server.start()
        log.info("health endpoint listening", extra={"host": health.host, "port": server.port})
        try:
            return await self._run()
        finally:
            await server.stop()

    def readiness(self) -> Readiness:
        """Ready: started, the store taking writes, and the spool below its high watermark."""
        reasons: list[str] = []
        if not self._started:
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
        limits = self.settings.spool
        used = max(
            self.spool.used_bytes / max(limits.max_bytes, 1),
            self.spool.entry_count / limits.max_entries,
        )
        if used >= SPOOL_HIGH_WATERMARK:
            reasons.append(f"spool {used:.0%} full: reading is paused or about to be")
        for path, ratio in sorted(self.guard.critical.items()):
            reasons.append(
                f"filesystem of {path} {ratio:.1%} full: above disk.critical_watermark"
                f" ({self.settings.disk.critical_watermark:.0%})"
            )
        return Readiness(reasons)

    def file_status(self, *, stale_only: bool = False) -> list[FileStatus]:
        """Every file open or idle now: size, how far it is shipped, when last written.

        ``stale_only``: only the stale ones, without building the others' status
        (the stale check runs every 30 s over what may be 100,000 idle files).
        """
        now, mono = time.time(), time.monotonic()
        stale_after = {name: s.stale_after_secs for name, s in self.settings.sources.items()}
        found: list[FileStatus] = []
        for active in self.active.values():
            tailer = active.tailer
            try:
                st = tailer.stat()
            except (OSError, AssertionError):
                continue  # closed meanwhile
            # A compressed file's decompressed size is known only once read through.
            compressed = isinstance(tailer, CompressedFileTailer)
            size = tailer.read_position if compressed else st.st_size
            found.append(
                self._status_of(
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
        for parked in self._parked.values():
            checkpoint = parked.checkpoint
            if stale_only and (
                checkpoint.finished
                or now - parked.mtime_ns / 1e9 <= stale_after.get(checkpoint.source, float("inf"))
            ):
                continue
            found.append(
                self._status_of(
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

    def _status_of(
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
        known = self.known.get(fid)
        settings = self.settings.sources.get(source)
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

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

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
                "max_bytes": self.settings.spool.max_bytes,
                "max_entries": self.settings.spool.max_entries,
            },
            "uploads": {
                "queued": uploader.backlog if uploader else 0,
                "last_success": uploader.last_success if uploader else None,
                "failing_since": uploader.failing_since if uploader else None,
            },
            "readiness": {"ready": readiness.ready, "reasons": readiness.reasons},
        }

    async def _watch_stale(self) -> None:
        """Log a live file that stopped being written, once, and when it starts again."""
        warned: set[str] = set()
        shortest = min(s.stale_after_secs for s in self.settings.sources.values())
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

    async def _run(self) -> ExitCode:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, _log_task_stacks)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested)
        # Watchdog pings from the start: recovering state is a stretch systemd must see alive.
        pings = asyncio.create_task(self._tell_systemd(), name="sd_notify")
        pings.add_done_callback(_report_crash)
        try:
            spooled = await asyncio.to_thread(self._recover)
        except BaseException:
            pings.cancel()
            raise
        self.uploader = Uploader(
            sink=self.sink,
            spool=self.spool,
            ledger=self.ledger,
            host=self.host,
            concurrency=self.settings.sink.upload_concurrency,
            on_space_freed=self._space_freed.set,
            on_damaged=lambda damaged: loop.call_soon_threadsafe(self._found_damaged, damaged),
            observe_latency=self.metrics.upload_seconds.observe,
        )
        for entry in spooled:
            self.uploader.submit(entry)
        self.uploader.start()
        # Before any reading: the chain sees the old range alone, as it first did.
        await self._refill_damaged()
        # The first scan applies ``read_from`` to the files already there.
        await self._scan(initial=True)
        background = [asyncio.create_task(self._persist_periodically(), name="checkpoints")]
        if not self.one_shot:
            background += [
                asyncio.create_task(self._watch(), name="watch"),
                asyncio.create_task(self._discover(), name="discover"),
                asyncio.create_task(self._watch_stale(), name="stale"),
                asyncio.create_task(self.guard.run(), name="disk_guard"),
            ]
        for task in background:
            task.add_done_callback(_report_crash)
        self._started = True
        log.info(
            "started",
            extra={"sources": sorted(self.settings.sources), "sink": self.settings.sink.type},
        )
        self.notifier.notify(ready="1", status=self._status_line())
        background.append(pings)
        try:
            await self._pump()
            return await self._drain()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            # For a reload, puts in flight finish (bounded) before the next run sends
            # their entries again; at exit the process ending stops them.
            reloading = self.reload_settings is not None
            in_flight_secs = min(self.settings.shutdown_timeout_secs, RELOAD_IN_FLIGHT_SECS)
            in_flight_secs = in_flight_secs if reloading else 0.0
            await self.uploader.stop(in_flight_secs=in_flight_secs)
            await self._persist_checkpoints()
            self.ledger.db.close()
            self.sink.close()
            self.notifier.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            # Between this run and a reloaded one, a SIGHUP must not end the process.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            self._release_lock()

    def _reload_requested(self) -> None:
        if self._stopping.is_set():
            log.warning("SIGHUP while stopping: ignored")
            return
        task = asyncio.create_task(self._reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        task.add_done_callback(_report_crash)

    async def _reload(self) -> None:
        """Validate the config file again; if it is good and changed, run again on it.

        A bad file changes nothing: the problems are logged and the daemon goes on
        with the config it has. A good one stops reading, seals what is open and
        saves the checkpoints (the spool keeps every sealed batch), and ``run``
        returns for the caller to start again on the new settings.
        """
        path = self.settings.config_path
        if path is None:
            log.error("cannot reload: the daemon was not started from a config file")
            return
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self._counters["config_reloads_rejected"] += 1
            log.error(
                "config reload rejected; still running on the previous config",
                extra={"path": str(path), "problems": [str(p) for p in exc.problems]},
            )
            return
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(new, f.name) != getattr(self.settings, f.name)
        ]
        if self._stopping.is_set():
            return  # a stop came while the file was read: it wins
        if not changed:
            log.info("config reloaded: nothing changed", extra={"path": str(path)})
            return
        log.info("config reloaded: restarting on it", extra={"path": str(path), "changed": changed})
        self.reload_settings = new
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match this to its reload.
        monotonic_usec = str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        self.notifier.notify(
            reloading="1", monotonic_usec=monotonic_usec, status="reloading the config"
        )
        self.request_stop()

    def request_stop(self) -> None:
        """First signal: stop reading and drain. Second: give up on the drain."""
        if self._stopping.is_set():
            log.warning("second stop signal: exiting without waiting for uploads")
            self._forced.set()
        else:
            log.info(
                "stopping: sealing open batches"
                + ("" if self.reload_settings is not None else " and draining uploads")
            )
            self._stopping.set()
        self._wake.set()

    def _status_line(self) -> str:
        """systemd's one-line STATUS=: what ``systemctl status`` shows."""
        uploader = self.uploader
        queued = uploader.backlog if uploader is not None else 0
        state = "ready" if self.readiness().ready else "NOT READY"
        return (
            f"{state}; {len(self.active)} files open; spool {self.spool.used_bytes} bytes"
            f" in {self.spool.entry_count} batches; {queued} uploads queued"
        )

    async def _tell_systemd(self) -> None:
        """Watchdog pings from the event loop itself, and a fresh STATUS= now and then."""
        if not self.notifier.enabled:
            return
        interval = self.notifier.watchdog_interval_secs
        tick = min(interval, SYSTEMD_STATUS_SECS) if interval else SYSTEMD_STATUS_SECS
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            fields = {"watchdog": "1"} if interval else {}
            if not self._started:
                # Recovering (converting an old state directory, say) while the loop is
                # alive: more time, past TimeoutStartSec, a tick at a time.
                fields["extend_timeout_usec"] = str(int(tick * 3 * 1e6))
            if time.monotonic() - last_status >= SYSTEMD_STATUS_SECS:
                fields["status"] = self._status_line()
                last_status = time.monotonic()
            if fields:
                self.notifier.notify(**fields)

    async def _drain(self) -> ExitCode:
        assert self.uploader is not None
        if self.one_shot and not self._stopping.is_set() and await self._backfill_delivered():
            return self._backfill_outcome()
        code = await self._drain_after_stop()
        if self.one_shot and code == ExitCode.OK and self.reload_settings is None:
            log.warning("backfill interrupted; run it again to go on from where it stopped")
            return ExitCode.INCOMPLETE
        return code

    def _backfill_outcome(self) -> ExitCode:
        """Complete only if every file was read and every batch delivered."""
        counters = self.counters()
        for path in self._unidentified:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) > 0:  # an empty file has nothing to ship
                    self._backfill.skipped[printable_path(path)] = (
                        "its first line is not complete (no newline yet)"
                    )
        undelivered = counters.get("quarantined", 0) + counters.get("spool_lost", 0)
        if self._backfill.skipped or undelivered:
            log.error(
                "backfill incomplete: files left unread or batches not delivered",
                extra={
                    "unread": self._backfill.skipped,
                    "quarantined": counters.get("quarantined", 0),
                    "spool_lost": counters.get("spool_lost", 0),
                },
            )
            return ExitCode.INCOMPLETE
        log.info(
            "backfill complete: every file read to its end and delivered",
            extra={"counters": counters},
        )
        return ExitCode.OK

    async def _backfill_delivered(self) -> bool:
        """Everything is read: wait until it is all delivered, however long the store
        takes. A stop signal ends the wait (the usual drain follows)."""
        assert self.uploader is not None
        delivered = asyncio.create_task(self.uploader.drain(None))
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({delivered, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if delivered.done():
            return delivered.result()
        delivered.cancel()
        return False

    async def _backfill_done(self) -> bool:
        """Backfill: True once every file is read through; opens more while some wait."""
        if self.active:
            return False
        if self._waiting:
            await self._scan(initial=False, targeted=self._next_waiting())
            return False
        if self._waiting_to_open or self._backfill.more:
            await self._scan(initial=False)
            return False
        return True

    async def _compressed_for_backfill(self, *, already: int) -> list[ActiveFile]:
        """Backfill: open the compressed files with lines left, as many as slots allow
        (``already``: files this scan opens besides)."""
        found = await asyncio.to_thread(discover, self.settings.sources, compressed=True)
        free = self.settings.max_open_files - len(self.active) - already
        budget = min(free, BACKFILL_STREAMS)
        skip = self._backfill.seen | set(self.active)
        streams, self._backfill.more = await asyncio.to_thread(
            backfill_files.find_compressed_to_read,
            found,
            {fid: replace(c) for fid, c in self.known.items()},
            skip=skip,
            skipped=self._backfill.skipped,
            fingerprint_bytes={n: s.fingerprint_bytes for n, s in self.settings.sources.items()},
            budget=max(budget, 0),
            roots={n: r.allowed for n, r in roots_of(self.settings.sources).items()},
        )
        self._backfill.seen |= skip
        opened: list[ActiveFile] = []
        for found_stream in streams:
            checkpoint = self.known.setdefault(
                found_stream.checkpoint.fingerprint.id, found_stream.checkpoint
            )
            active = self._open_compressed(found_stream.stream, checkpoint)
            if active is not None:
                opened.append(active)
        return opened

    async def _drain_after_stop(self) -> ExitCode:
        assert self.uploader is not None
        if self.reload_settings is not None:
            # Nothing to wait for: every sealed batch is in the spool, and the next
            # run uploads it (a batch already stored is answered with a 412).
            log.info("stopped reading for the reload", extra={"spool_bytes": self.spool.used_bytes})
            return ExitCode.OK
        self.notifier.notify(stopping="1", status="stopping: draining uploads")
        timeout = self.settings.shutdown_timeout_secs
        drained = asyncio.create_task(self.uploader.drain(timeout))
        forced = asyncio.create_task(self._forced.wait())
        await asyncio.wait({drained, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not drained.done():
            drained.cancel()
            log.warning(
                "forced exit; undelivered batches stay in the spool for the next start",
                extra={"spool_bytes": self.spool.used_bytes},
            )
            return ExitCode.FORCED
        if not drained.result():
            log.warning(
                "shutdown timeout reached; undelivered batches stay in the spool",
                extra={"spool_bytes": self.spool.used_bytes, "timeout_secs": timeout},
            )
        log.info("stopped", extra={"counters": self.counters()})
        return ExitCode.OK

    def counters(self) -> dict[str, int]:
        result = dict(self.chain.counters)
        result.update(self._counters)
        result.update(self.guard.counters)
        result.update(self._refusals.counters)
        result.update(self.spool.counters)
        if self.uploader is not None:
            result.update(self.uploader.counters)
        return result

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> list[SpoolEntry]:
        """Runs in a thread: lock the state directory, load it, return the spooled entries."""
        state_dir = self.settings.state_dir
        try:
            make_dirs(state_dir, PRIVATE_DIR_MODE)
            self._take_lock(state_dir / "lock")
            self.ledger.db.open()
            migrate_legacy_state(
                state_dir,
                self.ledger.db,
                grace_secs=self.settings.checkpoint_grace_secs,
                now=time.time(),
            )
            stored = self.ledger.db.load()
            spooled, damaged = self.spool.recover()
        except OSError as exc:
            raise StateError(f"state_dir {state_dir}: {exc}") from exc
        for problem in stored.unreadable:
            log.error("unreadable state row skipped", extra={"row": problem})
        self._saved.forms = {
            fid: _saved_form(c, self._seen_resolution) for fid, c in stored.checkpoints.items()
        }
        self.shipped.load(stored.shipped)
        self.known = KnownFiles(resume_positions(stored.checkpoints, spooled, stored.shipped))
        # Rows of files not resumed go at the next save.
        self._saved.forgotten.update(f for f in stored.checkpoints if f not in self.known)
        self._checkpoints_dirty = True  # what the spool and the deliveries moved
        for entry in damaged:
            # A file that only a damaged entry still names (its checkpoints lost too):
            # known from that entry's end, so it is not read from byte 0 as new.
            fid = entry.fingerprint_id
            if fid is not None and fid not in self.known and entry.fingerprint and entry.source:
                self.known[fid] = Checkpoint(
                    entry.fingerprint, entry.source, entry.file_path or "", entry.end or 0
                )
        self._refill_plan = refill.plan(damaged, self.known, spooled, self.shipped)
        self._had_state = bool(self.known)
        log.info(
            "recovered state",
            extra={
                "known_files": len(self.known),
                "shipped_files": len(stored.shipped),
                "spooled_entries": len(spooled),
                "damaged_entries": len(damaged),
                "spool_bytes": self.spool.used_bytes,
            },
        )
        return spooled

    def _found_damaged(self, damaged: DamagedEntry) -> None:
        """An upload found an entry damaged on disk: read its lines again soon."""
        self._refill_plan.extend(refill.plan([damaged], self.known, [], self.shipped))
        self._wake.set()

    async def _refill_damaged(self) -> None:
        """Read again the lines of damaged spool entries, then set the entries aside.

        The ranges of one entry are sealed as one new entry before the damaged one
        is moved, so a crash in between finds the new entry and reads nothing twice.
        A local error (disk full, too many open files) leaves the entry in place,
        tried again later.
        """
        plan, self._refill_plan = self._refill_plan, refill.Plan([], [], [])
        assert self.uploader is not None
        holes: dict[Path, list[refill.Hole]] = defaultdict(list)
        for hole in plan.holes:
            holes[hole.damaged.path].append(hole)
        for damaged, why in plan.settled:
            log.warning(
                "damaged spool entry: nothing to read again for a range of it",
                extra={"path": str(damaged.path), "reason": damaged.reason, "because": why},
            )
        for damaged, why in plan.lost:
            self._report_lost(damaged, why)
        for group in holes.values():
            await self._refill_entry(group)
        # Set aside once nothing of them is left to read again.
        for damaged, _ in plan.settled + plan.lost:
            if damaged.path not in holes:
                await asyncio.to_thread(self.spool.set_aside, damaged)

    async def _refill_entry(self, holes: list[refill.Hole]) -> None:
        """Read one damaged entry's ranges again into one new entry, then set it aside."""
        assert self.uploader is not None
        damaged = holes[0].damaged
        places = await self._places([])
        batches: list[tuple[Batch, Marker | None]] = []
        for hole in holes:
            try:
                batches.append(await asyncio.to_thread(self._refill_batch, hole, places))
            except refill.RefillError as exc:
                self._report_lost(damaged, str(exc), hole=hole)
            except OSError as exc:
                self._refill_plan.holes.extend(holes)
                self._refill_retry_at = time.monotonic() + REFILL_RETRY_SECS
                self._warnings.warn(
                    "reading a damaged spool entry's lines again failed; will retry",
                    path=str(damaged.path),
                    error=str(exc),
                )
                return
        if batches:
            # The damaged entry's own key and codec, when its header says: if it had
            # in fact been stored, the store's 412 still makes this a no-op.
            entry = await asyncio.to_thread(
                self._seal_batches, batches, key=damaged.key, codec=damaged.codec
            )
            self._counters["spool_refilled"] += 1
            log.warning(
                "damaged spool entry set aside; its lines were read again from the file",
                extra={
                    "path": str(damaged.path),
                    "reason": damaged.reason,
                    "file": entry.segments[0].path,
                    "start": entry.segments[0].start,
                    "end": entry.segments[0].end,
                    "files": len(entry.segments),
                    "lines": entry.lines,
                },
            )
            self.uploader.submit(entry)
        await asyncio.to_thread(self.spool.set_aside, damaged)

    def _report_lost(
        self, damaged: DamagedEntry, why: str, *, hole: refill.Hole | None = None
    ) -> None:
        """An ERROR naming the lost range: ``hole``'s, else the entry's (first) one."""
        self._counters["spool_lost"] += 1
        where: dict[str, object] = {
            "fingerprint": damaged.fingerprint_id,
            "file": damaged.file_path,
            "start": damaged.start,
            "end": damaged.end,
        }
        if hole is not None:
            where = {
                "fingerprint": hole.fingerprint.id,
                "file": hole.path,
                "start": hole.start,
                "end": hole.end,
            }
        log.error(
            "damaged spool entry set aside; its lines cannot be read again and are lost",
            extra={"path": str(damaged.path), "reason": damaged.reason, "because": why, **where},
        )

    def _refill_batch(self, hole: refill.Hole, places: set[Path]) -> tuple[Batch, Marker | None]:
        """Runs in a thread: read the range again, through the chain, into one batch."""
        source = self.settings.sources.get(hole.source)
        if source is None:
            raise refill.RefillError(f'source "{hole.source}" is no longer in the config')
        tailer = refill.open_hole(
            hole,
            places,
            chunk_bytes=source.read_chunk_bytes,
            max_line_bytes=source.max_line_bytes,
        )
        # The chain's per-file state (an open private key block) is the live
        # reader's: the old range gets a stream of its own, started as the file
        # was at the range's start.
        stream = f"refill:{hole.fingerprint.id}:{hole.start}"
        redactor = self.chain.redactor
        try:
            if redactor is not None and refill.inside_key_block(tailer, hole.start):
                redactor.enter_key_block(stream)
            active = self._active_for(tailer, (hole.fingerprint.dev, hole.fingerprint.ino))
            # One batch for the whole range, as when it was first sealed.
            active.batcher.limits = replace(self.limits, max_bytes=2**62, max_records=2**62)
            for chunk in refill.read_hole(hole, tailer):
                self._process(active, active.lines_of(chunk), stream=stream)
            held = None if active.joiner is None else active.joiner.flush(time.time())
            if held is not None:
                self._process(active, held, stream=stream)
            batch = active.batcher.flush()
            end_marker = tailer.marker_at(hole.end)
        finally:
            tailer.close()
            if redactor is not None:
                redactor.forget(stream)
        if batch is None or active.unsealed:
            raise refill.RefillError(f"{tailer.path}: no lines between {hole.start} and {hole.end}")
        if hole.first_time is not None:
            batch.first_time = hole.first_time
        return batch, end_marker

    def _take_lock(self, path: Path) -> None:
        # Two daemons on one state directory would each ship the same lines.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StateError(f"{path}: another shipper is running on this state_dir") from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --------------------------------------------------------------- the reader

    async def _pump(self) -> None:
        """Read, batch and seal until asked to stop; then seal what is open."""
        try:
            while not self._stopping.is_set():
                if not await self._wait_for_spool_space():
                    break
                async with self._reading:
                    if self._refill_plan.pending and time.monotonic() >= self._refill_retry_at:
                        await self._refill_damaged()
                    progressed = await self._read_round()
                    await self._seal_aged()
                    await self._finish_done_files()
                    await self._park_idle_files()
                if self.one_shot and await self._backfill_done():
                    break
                if not progressed:
                    await self._idle()
        finally:
            await self._seal_all_open()

    async def _idle(self) -> None:
        if self._events.dirty and self._events.live:
            return  # written to during the round: read again at once
        next_look = (
            self._events.next_sweep if self._events.live else time.monotonic() + IDLE_WAIT_SECS
        )
        deadlines = [next_look]
        for active in self.active.values():
            pending = active.batcher.pending
            if pending is not None:
                deadlines.append(pending.opened_at + self.limits.max_age_secs)
            held_until = None if active.joiner is None else active.joiner.deadline()
            if held_until is not None:
                deadlines.append(held_until)
        timeout = max(0.0, min(deadlines) - time.monotonic())
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _discover(self) -> None:
        """Scan everything every ``poll_interval_secs`` (and soon after a create, rename
        or delete), resting after each scan in proportion to what it cost; meanwhile,
        look at once at the paths change events name and at files waiting for a slot.

        It runs beside the reader, not between its reads, so a file that is
        created and rotated away quickly is opened (and so kept readable) early.
        """
        while not self._stopping.is_set():
            self._rescan.clear()
            spent = await self._timed_scan(targeted=None)
            # A scan costs O(files matched): rest in proportion, so that scanning takes
            # a bounded share of a core however many files there are.
            rest = min(spent * SCAN_REST_FACTOR, SCAN_REST_MAX_SECS)
            started = time.monotonic()
            rested, next_scan = (
                started + rest,
                started + max(rest, self.settings.poll_interval_secs),
            )
            while not self._stopping.is_set():
                targets = self._take_targets()
                if targets:
                    await self._timed_scan(targeted=targets)
                    continue
                now = time.monotonic()
                wanted = rested if self._rescan.is_set() else next_scan
                if now >= wanted:
                    break
                events = [self._events.targeted, self._stopping]
                if not self._rescan.is_set():
                    events.append(self._rescan)
                await self._first_of(events, wanted - now)

    async def _timed_scan(self, *, targeted: list[tuple[str, str]] | None) -> float:
        """One scan; the smaller of the wall and process time it took.

        The smaller: other processes' load inflates the one, the reader's own work
        meanwhile the other.
        """
        wall, cpu = time.monotonic(), time.process_time()
        try:
            await self._scan(initial=False, targeted=targeted)
        except OSError as exc:
            self._warnings.warn("scan failed; will retry", error=str(exc))
        except Exception:
            # Discovery must outlive a bug in one scan, or new files go unread.
            log.exception("scan failed unexpectedly; will retry")
        return min(time.monotonic() - wall, time.process_time() - cpu)

    async def _first_of(self, events: Iterable[asyncio.Event], timeout: float) -> None:
        """Until one of ``events`` is set, or ``timeout`` seconds pass."""
        waiters = {asyncio.ensure_future(event.wait()) for event in events}
        _, pending = await asyncio.wait(
            waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()

    def _take_targets(self) -> list[tuple[str, str]]:
        """``(source, path)`` to look at alone now: paths events named, then as many
        files waiting for a slot as there are free slots."""
        self._events.targeted.clear()
        named, self._events.targets = self._events.targets, {}
        targets: list[tuple[str, str]] = []
        for path in named:
            source = source_of(self.settings.sources, path)
            if source is not None:
                targets.append((source, path))
            elif any("**" in p for s in self.settings.sources.values() for p in s.include):
                self._rescan.set()  # a ``**`` glob may select it: only a scan can tell
        return targets + self._next_waiting()

    def _next_waiting(self) -> list[tuple[str, str]]:
        """The files first in line for a slot, as many as are free."""
        return self._waiting.first(self._max_open - len(self.active) - len(self._preopened))

    def _spool_full(self) -> bool:
        limits = self.settings.spool
        return (
            self.spool.used_bytes >= limits.max_bytes
            or self.spool.entry_count >= limits.max_entries
        )

    async def _wait_for_spool_space(self) -> bool:
        """Backpressure: while the spool is full, read nothing. False if a stop came first."""
        warned = False
        while True:
            # Cleared before the check, so a delivery between the two is not missed.
            self._space_freed.clear()
            if not self._spool_full():
                return True
            if not warned:
                log.warning(
                    "spool full; pausing reads until uploads catch up",
                    extra={
                        "spool_bytes": self.spool.used_bytes,
                        "spool_entries": self.spool.entry_count,
                    },
                )
                warned = True
            stop = asyncio.create_task(self._stopping.wait())
            freed = asyncio.create_task(self._space_freed.wait())
            await asyncio.wait({stop, freed}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            freed.cancel()
            if self._stopping.is_set():
                return False

    async def _read_round(self) -> bool:
        """One chunk from every active file; True if any produced bytes."""
        progressed = False
        actives = list(self.active.values())
        # Lines of a rotated file come before those of its successor.
        draining = [a for a in actives if a.tailer.finish_at_eof and not a.at_eof and not a.failing]
        due = draining or self._due_for_reading(actives)
        while due and not self._stopping.is_set():
            stepped = await asyncio.to_thread(self._read_steps, due)
            due = due[len(stepped) :]
            for active, result in stepped:
                self._settle(active, result)
                active.at_eof = not result.got_bytes and result.error is None
                active.failing = result.error is not None
                active.truncated = active.truncated or result.truncated
                progressed = progressed or result.got_bytes
        return progressed

    def _read_steps(self, actives: list[ActiveFile]) -> list[tuple[ActiveFile, StepResult]]:
        """Runs in a thread: a read step of each file in turn, for about
        ``READ_HOP_SECS`` (one at least), or until a stop.

        One hop to the thread per file cost more than the read of a small file.
        """
        deadline = time.monotonic() + READ_HOP_SECS
        stepped = []
        for active in actives:
            stepped.append((active, self._read_step(active)))
            if time.monotonic() >= deadline or self._stopping.is_set():
                break
        return stepped

    def _due_for_reading(self, actives: list[ActiveFile]) -> list[ActiveFile]:
        """The files to read this round.

        Without change events every file is read every round (polling). With them,
        a file at its end is read again only when an event names it, and all files
        every ``poll_interval_secs`` (events can be missed: a symlinked file's
        target directory is not watched, and inotify queues overflow).
        """
        now = time.monotonic()
        if not self._events.live:
            return actives
        sweep = now >= self._events.next_sweep
        dirty, self._events.dirty = self._events.dirty, set()
        if sweep:
            self._events.next_sweep = now + self.settings.poll_interval_secs
        due = []
        for active in actives:
            busy = (
                not active.at_eof
                or active.failing
                or active.unsealed
                or active.tailer.finish_at_eof
            )
            if busy or active.tailer.path in dirty or (sweep and self._changed(active)):
                due.append(active)
        return due

    @staticmethod
    def _changed(active: ActiveFile) -> bool:
        """Whether a file's size or modification time moved since the last sweep (an
        fstat: much cheaper than a read, which also checks the head and a marker)."""
        try:
            st = active.tailer.stat()
        except (OSError, AssertionError):
            return True  # let the read find out what happened
        stamp = (st.st_size, st.st_mtime_ns)
        changed, active.stamp = stamp != active.stamp, stamp
        return changed

    def _resume_key_block(self, active: ActiveFile) -> None:
        """Runs in a thread: start the file's stream inside a private key block if the
        bytes before where it is read from open one (the redactor follows blocks line
        by line, and knows nothing of lines read before a restart)."""
        active.check_key_block = False
        redactor = self.chain.redactor
        tailer = active.tailer
        if redactor is not None and refill.inside_key_block(tailer, tailer.offset):
            redactor.enter_key_block(tailer.fingerprint.id)

    def _read_step(self, active: ActiveFile) -> StepResult:
        """Runs in a thread: seal what is owed, read a chunk, process it, seal what it completes."""
        result = self._seal_unsealed(active)
        if result.error is not None or active.unsealed:
            return result  # still owes batches (spool full, disk error): read no further
        try:
            if active.tailer.replaced_in_place():
                result.truncated = True
                return result
            before = active.tailer.offset
            if active.check_key_block:
                self._resume_key_block(active)
            chunk = active.tailer.read()
        except OSError as exc:
            result.error = exc
            return result
        if chunk is None:
            return result
        result.got_bytes = True
        self._counters["lines_read"] += len(chunk.lines)
        self._counters["bytes_read"] += active.tailer.offset - before
        self._process(active, active.lines_of(chunk))
        more = self._seal_unsealed(active)
        result.entries += more.entries
        result.markers += more.markers
        result.error = more.error
        return result

    def _process(self, active: ActiveFile, chunk: LineChunk, *, stream: str | None = None) -> None:
        batcher = active.batcher
        out = self.chain.run(
            chunk.lines,
            chunk.ends,
            read_time=chunk.read_time,
            line_flags=chunk.flags,
            stream=batcher.fingerprint.id if stream is None else stream,
            path=batcher.path,
            start=batcher.position,
        )
        active.unsealed += active.batcher.add(out, time.monotonic())

    def _seal_unsealed(self, active: ActiveFile, *, beyond_limits: bool = False) -> StepResult:
        """Seal a file's cut batches in order; stop when the spool is full or a write fails.

        Stopping keeps the sealed ranges of a file a prefix of it: a later batch is
        never durable while an earlier one is not, so a crash cannot leave a hole.
        What waits here is at most one read chunk's worth of batches per file.
        """
        result = StepResult()
        while active.unsealed:
            if self._spool_full() and not beyond_limits:
                break
            batch = active.unsealed[0]
            try:
                marker = active.tailer.marker_at(batch.end)
            except OSError:
                marker = None  # the file is unreadable now; the older markers still hold
            try:
                entry = self._seal(batch, end_marker=marker)
            except OSError as exc:
                result.error = exc
                break
            del active.unsealed[0]
            result.entries.append(entry)
            if marker is not None:
                result.markers.append((batch.fingerprint.id, marker))
        return result

    def _settle(self, active: ActiveFile, result: StepResult) -> None:
        """Back on the event loop: accept what was sealed, report what failed."""
        self._accept(result.entries)
        for fid, marker in result.markers:
            checkpoint = self.known.get(fid)
            if checkpoint is not None:
                checkpoint.markers = remember(checkpoint.markers, marker)
        if result.error is not None:
            self._warnings.warn(
                "file read or spool write failed; will retry",
                path=active.tailer.path,
                error=str(result.error),
                unsealed_batches=len(active.unsealed),
            )

    def _seal(self, batch: Batch, *, end_marker: Marker | None) -> SpoolEntry:
        """Encode, compress and durably spool one batch. Runs in a thread."""
        return self._seal_batches([(batch, end_marker)])

    def _seal_batches(
        self,
        batches: list[tuple[Batch, Marker | None]],
        *,
        key: str | None = None,
        codec: str | None = None,
    ) -> SpoolEntry:
        """Encode, compress and durably spool batches of one source as one entry (each
        of another file, each with its end marker). Runs in a thread.

        ``key`` and ``codec`` replace the configured ones for batches sealed again.
        """
        sink = self.settings.sink
        if codec is None or codec == sink.codec:
            codec, level = sink.codec, sink.compression_level
        else:
            level = DEFAULT_COMPRESSION_LEVEL[codec]
        encoded = pack_batches(batches, keys=self.keys, codec=codec, compression_level=level)
        if key is not None:
            encoded = replace(encoded, key=key)
        return self.spool.seal(encoded)

    def _accept(self, entries: list[SpoolEntry]) -> None:
        """Entries are durable: advance their files' checkpoints and queue the uploads."""
        assert self.uploader is not None
        for entry in entries:
            for segment in entry.segments:
                fid = segment.fingerprint.id
                checkpoint = self.known.get(fid)
                if checkpoint is None:
                    self.known[fid] = Checkpoint(
                        segment.fingerprint, entry.source, segment.path, segment.end
                    )
                else:
                    checkpoint.offset = max(checkpoint.offset, segment.end)
                    checkpoint.path = segment.path
                    checkpoint.seen_at = time.time()
            self._checkpoints_dirty = True
            self.uploader.submit(entry)

    async def _seal_aged(self) -> None:
        now = time.monotonic()
        for active in list(self.active.values()):
            joiner = active.joiner
            deadline = None if joiner is None else joiner.deadline()
            if joiner is not None and deadline is not None and now >= deadline:
                held = joiner.flush(time.time())
                if held is not None:
                    await asyncio.to_thread(self._process, active, held)
        await self._flush_together([a for a in self.active.values() if a.batcher.due(now)])

    async def _flush_together(
        self, actives: list[ActiveFile], *, beyond_limits: bool = False
    ) -> list[ActiveFile]:
        """Cut and seal every file's open batch however small; the files with nothing
        left unsealed.

        Files that owe one batch each are packed, per source, into shared entries
        (see :meth:`_seal_packed`): many small files cost one spool write, one
        upload and one ledger commit between them, not one each.
        """
        for active in actives:
            batch = active.batcher.flush()
            if batch is not None:
                active.unsealed.append(batch)
        packable = [a for a in actives if len(a.unsealed) == 1]
        for active in actives:
            if len(active.unsealed) > 1:
                await self._flush(active, beyond_limits=beyond_limits)
        if packable:
            result = await asyncio.to_thread(
                functools.partial(self._seal_packed, packable, beyond_limits=beyond_limits)
            )
            self._settle(packable[0], result)
        return [a for a in actives if not a.unsealed]

    def _seal_packed(self, actives: list[ActiveFile], *, beyond_limits: bool = False) -> StepResult:
        """Runs in a thread: seal the one batch each file owes, packing those of one
        source into entries within the batch limits and :data:`PACK_SEGMENTS_BUDGET`.

        Each file's batch is its only unsealed one, so the order of its batches
        holds whatever is packed beside it. Stops like :meth:`_seal_unsealed`.
        """
        result = StepResult()
        by_source: dict[str, list[ActiveFile]] = defaultdict(list)
        for active in actives:
            by_source[active.tailer.source].append(active)
        for members in by_source.values():
            for pack in _packs(members, self.limits):
                if self._spool_full() and not beyond_limits:
                    return result
                batches: list[tuple[Batch, Marker | None]] = []
                for active in pack:
                    batch = active.unsealed[0]
                    try:
                        marker = active.tailer.marker_at(batch.end)
                    except OSError:
                        marker = None  # the file is unreadable now; older markers hold
                    batches.append((batch, marker))
                try:
                    entry = self._seal_batches(batches)
                except OSError as exc:
                    result.error = exc
                    return result
                result.entries.append(entry)
                for active, (batch, marker) in zip(pack, batches, strict=True):
                    del active.unsealed[0]
                    if marker is not None:
                        result.markers.append((batch.fingerprint.id, marker))
        return result

    async def _flush(self, active: ActiveFile, *, beyond_limits: bool = False) -> bool:
        """Cut and seal the open batch however small; True once nothing is left unsealed."""
        batch = active.batcher.flush()
        if batch is not None:
            active.unsealed.append(batch)
        if active.unsealed:
            result = await asyncio.to_thread(
                functools.partial(self._seal_unsealed, active, beyond_limits=beyond_limits)
            )
            self._settle(active, result)
        return not active.unsealed

    async def _seal_all_open(self) -> None:
        # The disk guard may be letting go of a file: wait for it, then hold it off.
        async with self._reading:
            await self._seal_all_open_now()

    async def _seal_all_open_now(self) -> None:
        actives = list(self.active.values())
        for active in actives:
            held = None
            if active.joiner is not None and active.tailer.finish_at_eof:
                # A live file's held record is read again, whole, at the next start;
                # a rotated file may be gone by then.
                held = active.joiner.flush(time.time())
            if held is not None:
                await asyncio.to_thread(self._process, active, held)
        # A few batches past the spool's limits, rather than reading them again.
        await self._flush_together(actives, beyond_limits=True)
        for active in actives:
            if active.unsealed:
                log.error(
                    "could not seal open batches at shutdown; their lines will be read again",
                    extra={"path": active.tailer.path, "batches": len(active.unsealed)},
                )
            active.tailer.close()
        self.active.clear()
        self._close_preopened()

    async def _finish_done_files(self) -> None:
        """Close files rotated away and quiet for ``rotate_wait_secs``, and truncated files.

        A truncated file (copytruncate) is finished like a rotated one; the next scan
        identifies it again by its new first line, as a new file read from byte 0.
        """
        now = time.monotonic()
        for inode, active in list(self.active.items()):
            tailer = active.tailer
            wait = self.settings.sources[tailer.source].rotate_wait_secs
            quiet = active.at_eof and now - tailer.last_growth >= wait
            if not (active.truncated or (tailer.finish_at_eof and quiet)):
                continue
            # At a truncation the unfinished line goes on in the copy, if there is one:
            # it is read from there whole rather than shipped in two pieces.
            partial = None if active.truncated else tailer.take_partial()
            last = [] if partial is None else [active.lines_of(partial)]
            if active.joiner is not None:
                last.append(active.joiner.flush(time.time()) or LineChunk())
            for chunk in last:
                await asyncio.to_thread(self._process, active, chunk)
            if not await self._flush(active):
                continue  # retried on the next round; the handle stays open meanwhile
            tailer.close()
            del self.active[inode]
            finished = self.known.get(tailer.fingerprint.id)
            if finished is not None and active.truncated:
                # Its unread lines may be in copytruncate's copy, looked for by the next
                # scan; only that search may call it finished (a crash before it must not).
                self._truncated_originals.append(finished)
            elif finished is not None:
                finished.finished = True
                self._checkpoints_dirty = True
            if isinstance(tailer, CompressedFileTailer) and tailer.stream.damage is not None:
                # Nothing after the damage can be read by anyone: say exactly what is lost.
                self._counters["compressed_damaged"] += 1
                log.error(
                    "compressed file damaged; the lines after this offset are lost",
                    extra={
                        "path": tailer.path,
                        "fingerprint": tailer.fingerprint.id,
                        "offset": tailer.offset,
                        "reason": tailer.stream.damage,
                    },
                )
            if isinstance(tailer, CompressedFileTailer) and tailer.stream.refused is not None:
                self._compressed_refused(tailer, tailer.stream.refused, finished)
            if active.truncated:
                # Rate-limited: a file that keeps shrinking must not flood the log.
                self._warnings.warn(
                    "file truncated in place (copytruncate?); reading it again from its start",
                    path=tailer.path,
                    read_up_to=tailer.offset,
                )
                self._rescan.set()
            else:
                log.info(
                    "finished rotated file",
                    extra={"path": tailer.path, "fingerprint": tailer.fingerprint.id},
                )

    def _compressed_refused(
        self, tailer: CompressedFileTailer, refusal: Refusal, checkpoint: Checkpoint | None
    ) -> None:
        """A compressed file refused as a bomb while being read: reported, left as it is.

        A backfill is then incomplete, and leaves it unfinished for its next run.
        """
        self.guard.refused.report(
            tailer.path, refusal, fingerprint=tailer.fingerprint.id, unread_from=tailer.offset
        )
        if self.one_shot:
            self._backfill.skipped[tailer.path] = f"refused: {refusal.reason}"
            if checkpoint is not None:
                checkpoint.finished = False

    async def _park_idle_files(self) -> None:
        """Close files at their end that are idle, or that others are waiting to replace.

        A parked file keeps its checkpoint; the next scan that finds it grown (or
        renamed away) opens it again by fingerprint and reads on from there.
        """
        now = time.monotonic()
        resting = [
            a
            for a in self.active.values()
            if a.at_eof
            and not a.tailer.finish_at_eof
            and not a.unsealed
            and not a.truncated
            and not (a.joiner is not None and a.joiner.holding)
        ]
        resting.sort(key=lambda a: a.tailer.last_growth)
        idle = [a for a in resting if now - a.tailer.last_growth >= self._close_inactive]
        over = len(self.active) + self._waiting_to_open - self.settings.max_open_files
        chosen = resting[: max(len(idle), over)]
        for active in await self._flush_together(chosen):
            checkpoint = self.known.get(active.tailer.fingerprint.id)
            if checkpoint is None:
                continue
            # Any other size later (growth, truncation) means there is something to read.
            consumed = active.tailer.read_position
            try:
                mtime_ns = active.tailer.mtime_ns()
                marker = active.tailer.marker_at(checkpoint.offset)
            except OSError:
                continue
            if marker is not None:
                checkpoint.markers = remember(checkpoint.markers, marker)
            active.tailer.close()
            del self.active[active.inode]
            self._parked[active.inode] = Parked(checkpoint, consumed, mtime_ns)
        if chosen:
            if self._waiting:
                self._events.targeted.set()  # waiting files may now be opened: at once
            self._waiting_to_open = 0
            self._rescan.set()

    # ------------------------------------------------------- retention and disk guard

    def guard_snapshot(self) -> GuardSnapshot:
        live: set[InodeKey] = set(self._preopened) | self._waiting.inodes()
        open_files: dict[InodeKey, tuple[Checkpoint, bool]] = {}
        for inode, active in self.active.items():
            checkpoint = self.known.get(active.tailer.fingerprint.id)
            if checkpoint is None:
                live.add(inode)  # not checkpointed yet: too new to judge
            else:
                open_files[inode] = (replace(checkpoint), active.tailer.finish_at_eof)
        known = {fid: replace(c) for fid, c in self.known.items()}
        return GuardSnapshot(known=known, live=live, open_files=open_files)

    @contextlib.asynccontextmanager
    async def reader_paused(self) -> AsyncIterator[None]:
        async with self._scanning, self._reading:
            yield

    def release_file(self, inode: InodeKey, fid: str | None) -> None:
        """Let go of a file being deleted: unsealed lines in it are in the gap record."""
        active = self.active.pop(inode, None)
        if active is not None:
            active.tailer.close()
            fid = fid or active.tailer.fingerprint.id
        self._parked.pop(inode, None)
        checkpoint = self.known.get(fid) if fid is not None else None
        if checkpoint is not None and not checkpoint.finished:
            checkpoint.finished = True
            self._checkpoints_dirty = True

    def seal_gap(self, file: RotatedFile, loss: Loss, reason: str) -> SpoolEntry:
        """Spool the record of lines deleted unshipped, as an object beside the batches."""
        sink = self.settings.sink
        gap = encode_gap(
            file,
            loss,
            reason,
            host=self.host,
            keys=self.keys,
            codec=sink.codec,
            level=sink.compression_level,
            now=time.time(),
        )
        return self.spool.seal(gap)

    def submit(self, entry: SpoolEntry) -> None:
        assert self.uploader is not None
        self.uploader.submit(entry)

    def still_present(self, fids: set[str]) -> None:
        """Found by the disk guard (a rotation it judged, compressed or not): seen now,
        so its checkpoint and delivered ranges are not forgotten while it is there."""
        now = time.time()
        for fid in fids:
            checkpoint = self.known.get(fid)
            if checkpoint is not None:
                checkpoint.seen_at = now

    # ---------------------------------------------------------------- discovery

    async def _scan(self, *, initial: bool, targeted: list[tuple[str, str]] | None = None) -> None:
        """Look at every file the sources select, or (``targeted``) at those paths alone.

        A targeted scan opens what it finds there that has lines to read; it takes
        nothing for gone, renamed or rotated: only a scan of everything can tell.
        """
        async with self._scanning:
            if targeted is None or not self._events.roots:
                # Resolved once a scan (an operator may move a symlinked base).
                self._events.roots = await asyncio.to_thread(roots_of, self.settings.sources)
            if targeted is None:
                await self._scan_now(initial=initial)
            else:
                await self._scan_now(initial=initial, targeted=targeted)

    async def _scan_now(
        self, *, initial: bool, targeted: list[tuple[str, str]] | None = None
    ) -> None:
        if targeted is None:
            found = await asyncio.to_thread(
                discover, self.settings.sources, refusals=self._refusals
            )
        else:
            found = await asyncio.to_thread(selected, targeted, self._events.roots)
        by_inode, by_head = self.known.index(snapshot=targeted is None)
        self._copies.continued = set()
        early = {} if targeted is not None else self._take_preopened(by_inode, by_head)
        # Known files waiting for a slot are followed like parked ones if rotated away.
        was_waiting = self._waiting.inodes() if targeted is None else set()
        results = await asyncio.to_thread(
            self._identify_all,
            found,
            by_inode,
            by_head,
            set(early) | set(self._preopened),
            initial,
            targeted=targeted is not None,
        )
        identified_now = [r[3] for r in results] + [e[2] for e in early.values()]
        originals = await asyncio.to_thread(self._pair_copies, results, early)
        self._learn_waiting()
        self._unpark_replaced(results)
        alive = self._alive_ids(identified_now, originals)
        seen, opened = self._open_found(results, early, alive, initial=initial)
        if targeted is not None:
            replaced = self._replaced(results, by_inode, alive)
            if replaced or self._truncated_originals:
                paths = [path for _, path in found]
                opened += await self._finish_elsewhere(replaced, identified_now, seen, paths)
            await self._start_tailing(opened)
            return
        # Files we were reading (at start: all known ones; later: parked ones) that the
        # globs no longer match may have been rotated with lines still unread.
        gone = set(by_inode) if initial else set(self._parked) | (was_waiting & set(by_inode))
        paths = [path for _, path in found]
        reopened, unfound = await self._reopen_rotated(
            gone - seen, by_inode, paths, keep_read=not initial
        )
        opened += reopened
        lost_track = unfound + self._replaced(results, by_inode, alive)
        opened += await self._finish_elsewhere(lost_track, identified_now, seen, paths)
        for inode in set(self._parked) - seen:
            del self._parked[inode]
        self._copies.forget_unseen(seen)
        if self.one_shot:
            opened += await self._compressed_for_backfill(already=len(opened))
        await self._start_tailing(opened)
        self._mark_seen(seen)

    def _open_found(
        self,
        results: list[tuple[str, str, InodeKey, Identified | None]],
        early: dict[InodeKey, tuple[str, str, Identified]],
        alive: Container[str],
        *,
        initial: bool,
    ) -> tuple[set[InodeKey], list[ActiveFile]]:
        """The inodes a scan found, and the files it opens (the pre-opened ones too)."""
        seen: set[InodeKey] = set()
        opened: list[ActiveFile] = []
        for source, path, inode, scanned in results:
            seen.add(inode)
            identified = early.pop(inode)[2] if inode in early else scanned
            active = self.active.get(inode)
            if active is not None:
                shown = printable_path(path)
                if active.tailer.path != shown:
                    log.info("file renamed", extra={"from": active.tailer.path, "to": shown})
                    active.tailer.path = active.batcher.path = shown
                active.tailer.finish_at_eof = self.one_shot
            elif self.one_shot and identified is not None and _read_through(identified):
                os.close(identified.fd)  # a backfill reads each file once
            elif identified is not None and not self._held_back(identified, alive):
                self._parked.pop(inode, None)
                opened.append(self._open(source, path, inode, identified, initial=initial))
        for inode, (source, path, identified) in early.items():
            if self._held_back(identified, alive):
                continue
            # Created and rotated away (or deleted) before any scan saw it: read it
            # through the handle taken when it appeared.
            active = self._open(source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            opened.append(active)
        return seen, opened

    def _mark_seen(self, seen: set[InodeKey]) -> None:
        """After a scan of everything: what it found is alive; a tailed file it did not
        find was rotated away."""
        now = time.time()
        for parked in self._parked.values():
            parked.checkpoint.seen_at = now
        for inode, active in self.active.items():
            tailed = self.known.get(active.tailer.fingerprint.id)
            if tailed is not None:
                tailed.seen_at = now
            if inode not in seen and not active.tailer.finish_at_eof:
                active.tailer.finish_at_eof = True
                log.info(
                    "file rotated away; reading it to its end", extra={"path": active.tailer.path}
                )

    def _learn_waiting(self) -> None:
        """Know the new files that wait for a slot, from where they will be read."""
        for checkpoint in self._registered:
            if checkpoint.fingerprint.id not in self.known:
                self.known[checkpoint.fingerprint.id] = checkpoint
                self._checkpoints_dirty = True
        self._registered = []

    def _unpark_replaced(self, results: list[tuple[str, str, InodeKey, Identified | None]]) -> None:
        """Parked files truncated or rewritten while closed (copytruncate of an idle file).

        What they held is finished, and their unread lines may be in a copy: the
        copy search of this scan looks for it.
        """
        for _, _, inode, identified in results:
            parked = self._parked.get(inode)
            if parked is None:
                continue
            fid = parked.checkpoint.fingerprint.id
            other = identified is not None and (
                identified.known is None or identified.known.fingerprint.id != fid
            )
            if inode in self._shrunk or other:
                del self._parked[inode]
                self._truncated_originals.append(parked.checkpoint)

    def _alive_ids(self, identified: list[Identified | None], originals: set[str]) -> _AliveIds:
        """Fingerprint ids of the files still there to be read: tailed, parked, waiting
        for a slot, or just found (``originals``: found beside their copy)."""
        found = {i.known.fingerprint.id for i in identified if i is not None and i.known}
        return _AliveIds(found | originals, self._still_to_read)

    def _still_to_read(self, fid: str) -> bool:
        """Whether the known file ``fid`` is tailed, parked or waiting for a slot."""
        checkpoint = self.known.get(fid)
        if checkpoint is None:
            return False
        fp = checkpoint.fingerprint
        inode = (fp.dev, fp.ino)
        if self._waiting.holds(inode):
            return True
        active = self.active.get(inode)
        if active is not None and active.tailer.fingerprint.id == fid:
            return True
        parked = self._parked.get(inode)
        return parked is not None and parked.checkpoint.fingerprint.id == fid

    def _replaced(
        self,
        results: list[tuple[str, str, InodeKey, Identified | None]],
        by_inode: Mapping[InodeKey, Sequence[Checkpoint]],
        alive: Container[str],
    ) -> list[Checkpoint]:
        """Unfinished files whose inode now holds another file (truncated while not read)."""
        replaced = []
        for _, _, inode, identified in results:
            if identified is None:
                continue  # not looked at this time (unchanged, or no free slot)
            for checkpoint in by_inode.get(inode, ()):
                fid = checkpoint.fingerprint.id
                if not checkpoint.finished and fid not in alive:
                    replaced.append(checkpoint)
        return replaced

    def _pair_copies(
        self,
        results: list[tuple[str, str, InodeKey, Identified | None]],
        early: dict[InodeKey, tuple[str, str, Identified]],
    ) -> set[str]:
        """Runs in a thread: make copies found beside their never-seen original wait.

        A copy paired by an earlier scan stays the original's copy while it still
        holds the original's bytes (or they cannot be compared: the original was
        truncated since), so it is held back until the original is read, then
        continued where that one was read up to. Returns the ids of originals
        found in this scan, which count as alive.
        """
        found = [(s, p, i) for s, p, _, i in results if i is not None]
        found += list(early.values())
        self._keep_paired([i for _, _, i in found])
        by_identity = {id(i): (s, p) for s, p, i in found}
        originals: set[str] = set()
        try:
            pairs = copies_found_together([i for _, _, i in found])
        except OSError:
            return originals  # looked at again by the next scan
        for copy, original in pairs:
            source, path = by_identity[id(original)]
            fp = original.fingerprint
            copy.copy_of = Checkpoint(fp, source, printable_path(path), 0)
            copy.copy_in_progress = False
            self._copies.paired[(copy.fingerprint.dev, copy.fingerprint.ino)] = fp.id
            originals.add(fp.id)
            log.info(
                "found a file and its copy (copytruncate under way?): reading the file,"
                " then the copy from where the file was read up to",
                extra={"path": printable_path(by_identity[id(copy)][1]), "copy_of": path},
            )
        return originals

    def _keep_paired(self, found: list[Identified]) -> None:
        """Copies paired by an earlier scan stay copies while they hold their original's bytes."""
        for identified in found:
            fp = identified.fingerprint
            original_id = self._copies.paired.get((fp.dev, fp.ino))
            if original_id is None or identified.known is not None:
                continue
            original = self.known.get(original_id)
            pread = functools.partial(os.pread, identified.fd)
            if (
                original is None
                or original.fingerprint.head_sha256 != fp.head_sha256
                or still_a_copy(original, pread, identified.size) is False
            ):
                del self._copies.paired[(fp.dev, fp.ino)]  # a file of its own after all
                identified.copy_of = None
                identified.copy_in_progress = False
            else:
                identified.copy_of = original
                identified.copy_in_progress = False

    def _held_back(self, identified: Identified, alive: Container[str]) -> bool:
        """Hold back a copy of a file that is still being read (closing it); True if so.

        copytruncate copies first and truncates after: until the original is read to
        its truncation, where the copy should continue is not known yet. A scan after
        the original is finished (or gone) continues the copy. A file that only looked
        like a copy being written (the same bytes so far) and whose original is done
        is a file of its own: read whole rather than risk losing it.
        """
        original = identified.copy_of
        if original is None:
            return False
        fp = identified.fingerprint
        inode = (fp.dev, fp.ino)
        now = time.monotonic()
        since, size = self._copies.held_since.get(inode, (now, -1))
        if size != identified.size:
            since = now  # still being written: the clock starts again
        self._copies.held_since[inode] = (since, identified.size)
        if identified.copy_in_progress and now - since > COPY_HOLD_SECS:
            # Not growing, and still the same bytes as its original: not a copy being
            # written but a file of its own with the same content so far.
            alive = ()
        if original.fingerprint.id in alive:
            os.close(identified.fd)
            return True
        del self._copies.held_since[inode]
        self._copies.paired.pop(inode, None)
        if identified.copy_in_progress:
            identified.copy_of = None
            identified.copy_in_progress = False
        return False

    async def _reopen_rotated(
        self,
        missing: set[InodeKey],
        by_inode: Mapping[InodeKey, Sequence[Checkpoint]],
        found: list[str],
        *,
        keep_read: bool,
    ) -> tuple[list[ActiveFile], list[Checkpoint]]:
        """Find files with unread lines that were renamed out of the globs unobserved.

        A rotation while the daemon was down, or while a file was parked, moves a
        half-read file to a name the globs may not match (``app.log.1``). It is looked
        for by device and inode in the directories the sources watch and where known
        files last were, checked by its first line, and read to its end first.
        Returns those reopened, and the unfinished files not found by inode.
        """
        if not missing:
            return [], []
        places = await self._places(found)
        candidates = await asyncio.to_thread(find_by_inode, sorted(places), missing)
        reopened: list[ActiveFile] = []
        located: set[str] = set()
        for path, inode in candidates:
            try:
                # Only known files are wanted here; the head length of a new file is moot.
                identified = await asyncio.to_thread(
                    identify, path, fingerprint_bytes=256, candidates=by_inode
                )
            except OSError as exc:
                # Found but not opened (out of descriptors, say): tried again next time,
                # never taken for gone.
                self._warnings.warn("cannot open rotated file", path=path, error=str(exc))
                located.update(c.fingerprint.id for c in by_inode.get(inode, ()))
                continue
            if identified is None:
                continue
            known = identified.known
            if known is not None:
                located.add(known.fingerprint.id)
            # At start, a fully read file needs nothing. A parked one renamed away may
            # still get lines from a writer that has not reopened yet: follow it.
            if known is None or (identified.size <= known.offset and not keep_read):
                os.close(identified.fd)  # another file now, or nothing left to read
                continue
            if known.source not in self.settings.sources:
                os.close(identified.fd)  # its source was removed from the config
                continue
            active = self._open(known.source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            log.info(
                "found a rotated file with unread lines; finishing it first",
                extra={"path": active.tailer.path, "offset": known.offset},
            )
            reopened.append(active)
        unfound = [
            c
            for inode in missing
            for c in by_inode.get(inode, ())
            if not c.finished and c.fingerprint.id not in located
        ]
        return reopened, unfound

    async def _places(self, found: list[str]) -> set[Path]:
        """Where rotated files may be: the watched directories and where known files were."""
        places = {Path(c.path).parent for c in self.known.values()}
        places.update(watch_roots(self.settings.sources))
        # Through symlinks too (Kubernetes' /var/log/containers): the kubelet renames
        # the target, in the target's directory.
        places.update(await asyncio.to_thread(real_parents, found))
        return places

    async def _finish_elsewhere(
        self,
        lost_track: list[Checkpoint],
        identified_now: list[Identified | None],
        skip: set[InodeKey],
        found: list[str],
    ) -> list[ActiveFile]:
        """Finish files whose inode no longer holds them, from a copy, else compressed.

        A file truncated by copytruncate, or gone while we were away or it was
        parked, may have lines we never read in a copy the globs do not match
        (``app.log.1``) or in a compressed rotation (``app.log.1.gz``). Files
        truncated while being read are looked for too, unless a copy the globs
        match was found (it is continued by the scan itself).

        A file is marked finished (never looked for again) only once that is
        durable: nothing was found, or a saved checkpoint continues it. One
        continued by what this search opens stays unfinished until that is read
        (a compressed copy) or saved (a copy), so a crash meanwhile looks again.
        """
        lost_track = lost_track + self._truncated_originals
        self._truncated_originals = []
        saved = {c.copy_of for c in self.known.values() if c.copy_of is not None}
        continued = saved | {i.copy_of.fingerprint.id for i in identified_now if i and i.copy_of}
        wanted = {
            c.fingerprint.id: c
            for c in lost_track
            if c.fingerprint.id not in continued and c.source in self.settings.sources
        }
        for checkpoint in lost_track:
            fid = checkpoint.fingerprint.id
            if fid in saved or (fid not in continued and fid not in wanted):
                checkpoint.finished = True
                self._checkpoints_dirty = True
        if not wanted:
            return []
        places = sorted(await self._places(found))
        skip = skip | set(self.active)
        copies = await asyncio.to_thread(find_copies, places, list(wanted.values()), skip)
        opened: list[ActiveFile] = []
        for path, identified in copies:
            original = identified.copy_of
            assert original is not None
            del wanted[original.fingerprint.id]
            inode = (identified.fingerprint.dev, identified.fingerprint.ino)
            active = self._open(original.source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            opened.append(active)
        if wanted:
            refused: list[tuple[str, Refusal]] = []
            streams = await asyncio.to_thread(
                find_compressed, places, list(wanted.values()), refused
            )
            for path, refusal in refused:
                self.guard.refused.report(printable_path(path), refusal)
            for stream, checkpoint in streams:
                compressed = self._open_compressed(stream, checkpoint)
                if compressed is not None:
                    del wanted[checkpoint.fingerprint.id]
                    opened.append(compressed)
        for checkpoint in wanted.values():  # nowhere to be found: nothing more will come
            checkpoint.finished = True
            self._checkpoints_dirty = True
        return opened

    def _open_compressed(
        self, stream: DecompressedStream, checkpoint: Checkpoint
    ) -> ActiveFile | None:
        try:
            st = os.fstat(stream.fileno())
        except OSError:
            stream.close()
            return None
        inode = (st.st_dev, st.st_ino)
        if inode in self.active:
            stream.close()
            return None
        settings = self.settings.sources[checkpoint.source]
        tailer = CompressedFileTailer(
            stream=stream,
            source=checkpoint.source,
            path=printable_path(stream.path),
            fingerprint=checkpoint.fingerprint,
            offset=checkpoint.offset,
            chunk_bytes=settings.read_chunk_bytes,
            max_line_bytes=settings.max_line_bytes,
        )
        log.info(
            "found a rotated file compressed before it was finished; finishing it from"
            " the decompressed stream",
            extra={"path": tailer.path, "was": checkpoint.path, "offset": checkpoint.offset},
        )
        return self._active_for(tailer, inode)

    def _identify_all(
        self,
        found: list[tuple[str, str]],
        by_inode: Mapping[InodeKey, Sequence[Checkpoint]],
        by_head: ByHead,
        held: set[InodeKey],
        initial: bool,
        *,
        targeted: bool = False,
    ) -> list[tuple[str, str, InodeKey, Identified | None]]:
        """Runs in a thread: stat every path, open and fingerprint the ones not being tailed.

        ``held`` are inodes already open elsewhere (pre-opened): seen, not opened again.
        ``targeted``: the paths are some only; what is known of the others stays.
        """
        results: list[tuple[str, str, InodeKey, Identified | None]] = []
        budget = self.settings.max_open_files - len(self.active)
        waiting: dict[str, tuple[str, InodeKey]] = {}
        headless: set[str] = set()  # files whose first line is not complete yet
        shrunk: set[InodeKey] = set()
        handled: set[InodeKey] = set()
        roots = self._events.roots
        resolved: dict[str, str] = {}  # directories' real paths, for this scan
        for source, path in found:
            try:
                st = os.stat(path)
                inode = (st.st_dev, st.st_ino)
                identified = None
                parked = self._parked.get(inode)
                if inode in handled:
                    continue  # another name (a link) for a file this scan has seen
                handled.add(inode)
                if parked is not None and st.st_size < parked.size:
                    shrunk.add(inode)  # truncated while closed
                if inode in held or self._nothing_to_read(st, parked, by_inode.get(inode, ())):
                    pass
                elif inode not in self.active and budget <= 0:
                    waiting[path] = (source, inode)  # read once another file is parked
                    if inode not in by_inode:
                        self._note_waiting(source, path, by_inode, resolved, initial=initial)
                elif inode not in self.active:
                    identified = identify(
                        path,
                        fingerprint_bytes=self.settings.sources[source].fingerprint_bytes,
                        candidates=by_inode,
                        by_head=by_head,
                        roots=roots[source].allowed,
                        resolved=resolved,
                    )
                    if identified is None:
                        headless.add(path)
                    elif identified is not None and identified.fingerprint.ino != inode[1]:
                        # Replaced between stat and open: take the next scan's word for it.
                        os.close(identified.fd)
                        continue
                    elif identified is not None:
                        budget -= 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._cannot_open(path, exc)
                continue
            results.append((source, path, inode, identified))
        self._shrunk = shrunk
        self._note_unopened(found, waiting, headless, targeted=targeted)
        return results

    def _note_unopened(
        self,
        found: list[tuple[str, str]],
        waiting: dict[str, tuple[str, InodeKey]],
        headless: set[str],
        *,
        targeted: bool,
    ) -> None:
        """Remember the files a scan found but did not open: waiting for a slot, or
        for a first line. A targeted scan updates what it looked at, no more."""
        if targeted:
            looked_at = {path for _, path in found}
            self._waiting.update(looked_at, waiting)
            self._unidentified = (self._unidentified - looked_at) | headless
        else:
            self._waiting.replace(waiting)
            self._unidentified = headless
            if waiting:
                self._warnings.warn(
                    "max_open_files reached; some files wait for a free slot",
                    waiting=len(waiting),
                    max_open_files=self.settings.max_open_files,
                )
        self._waiting_to_open = len(self._waiting)

    def _nothing_to_read(
        self, st: os.stat_result, parked: Parked | None, known: Iterable[Checkpoint]
    ) -> bool:
        """Parked and unchanged, or (backfill) read to its end already: not opened."""
        if parked is not None and (parked.size, parked.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return True
        return self.one_shot and _read_through_at(known, st.st_size)

    def _cannot_open(self, path: str, exc: OSError) -> None:
        self._warnings.warn("cannot open log file", path=path, error=str(exc))
        if self.one_shot:
            self._backfill.skipped[printable_path(path)] = str(exc)

    def _note_waiting(
        self,
        source: str,
        path: str,
        by_inode: Mapping[InodeKey, Sequence[Checkpoint]],
        resolved: dict[str, str],
        *,
        initial: bool,
    ) -> None:
        """Give a new file that waits for a slot a checkpoint at its start, unread.

        Known, it is followed by inode if it is rotated out of the globs while it
        waits, like any known file; unknown, it would be lost then. Runs in a thread.
        """
        try:
            found = identify(
                path,
                fingerprint_bytes=self.settings.sources[source].fingerprint_bytes,
                candidates=by_inode,
                roots=self._events.roots[source].allowed,
                resolved=resolved,
            )
        except OSError:
            return  # read once it can be opened
        if found is None:
            return
        try:
            offset = 0
            from_end = self.settings.sources[source].read_from == "end" and not self.one_shot
            if initial and from_end and not self._had_state:
                offset = end_of_last_line(found.fd, found.size)  # as _open would
        except OSError:
            return
        finally:
            os.close(found.fd)
        if found.known is None and not found.rewritten and found.copy_of is None:
            self._registered.append(
                Checkpoint(found.fingerprint, source, printable_path(path), offset)
            )

    def _open(
        self, source: str, path: str, inode: InodeKey, found: Identified, *, initial: bool
    ) -> ActiveFile:
        settings = self.settings.sources[source]
        copy_of = None
        if found.known is not None:
            offset = found.known.offset
            if found.known.source in self.settings.sources:
                source = found.known.source
                settings = self.settings.sources[source]
            found.known.seen_at = time.time()
            found.known.finished = False  # found again where it may still grow
        elif found.copy_of is not None:
            original = found.copy_of
            copy_of = original.fingerprint.id
            # A second copy of the same file holds nothing the first did not.
            continued = copy_of in self._copies.continued or any(
                c.copy_of == copy_of for c in self.known.values()
            )
            self._copies.continued.add(copy_of)
            offset = found.size if continued else min(original.offset, found.size)
            log.info(
                "copy of a known file (copytruncate?): continuing it where that one was read up to",
                extra={"path": path, "copy_of": original.path, "offset": offset},
            )
        elif found.rewritten:
            offset = 0
            log.warning(
                "file rewritten in place with the same first line; reading it from its start",
                extra={"path": path, "fingerprint": found.fingerprint.id},
            )
        elif initial and settings.read_from == "end" and not self._had_state and not self.one_shot:
            # Only on a first start. A file new at a later start appeared while we were
            # down (a rotation, most likely): all of it is unread.
            offset = end_of_last_line(found.fd, found.size)
        else:
            # A file that appears while running is read whole: it is usually the new
            # file of a rotation, and its first lines are as precious as any.
            offset = 0
        tailer = FileTailer(
            source=source,
            path=printable_path(path),
            fd=found.fd,
            fingerprint=found.fingerprint,
            offset=offset,
            chunk_bytes=settings.read_chunk_bytes,
            max_line_bytes=settings.max_line_bytes,
        )
        if found.known is not None and not found.known.markers:
            # Known from before markers, or never sealed since: mark where it resumes,
            # so a copy of it can be told from a new file.
            try:
                marker = tailer.marker_at(offset)
            except OSError:
                marker = None  # marked at its next sealed batch instead
            if marker is not None:
                found.known.markers = (marker,)
        return self._active_for(tailer, inode, copy_of=copy_of)

    def _active_for(
        self, tailer: FileTailer, inode: InodeKey, *, copy_of: str | None = None
    ) -> ActiveFile:
        """A tailer with its batcher and, where the source asks for one, its line joiner."""
        settings = self.settings.sources[tailer.source]
        batcher = Batcher(
            self.limits,
            source=tailer.source,
            fingerprint=tailer.fingerprint,
            path=tailer.path,
            position=tailer.offset,
        )
        multiline = settings.multiline
        rule = start_rule(preset=multiline.preset, start_pattern=multiline.start_pattern)
        joiner = None
        if rule is not None:
            joiner = LineJoiner(
                rule,
                timeout_secs=multiline.timeout_secs,
                max_lines=multiline.max_lines,
                max_bytes=settings.max_line_bytes,
            )
        if self.one_shot:
            # Read to its end, then finished (after rotate_wait_secs of quiet), as a
            # rotated file is: nothing more is expected of a historical file.
            tailer.finish_at_eof = True
        return ActiveFile(
            tailer,
            batcher,
            inode,
            joiner=joiner,
            copy_of=copy_of,
            check_key_block=tailer.offset > 0,
        )

    async def _start_tailing(self, opened: list[ActiveFile]) -> None:
        """Checkpoint never-seen files where they start, durably, before reading them.

        Otherwise a crash before their first batch is sealed would leave no trace of
        them, and the next start could apply ``read_from = "end"`` to lines never read.
        """
        new = [a for a in opened if a.tailer.fingerprint.id not in self.known]
        for active in new:
            tailer = active.tailer
            self.known[tailer.fingerprint.id] = Checkpoint(
                tailer.fingerprint,
                tailer.source,
                tailer.path,
                tailer.offset,
                copy_of=active.copy_of,
            )
        if new:
            await self._persist_checkpoints()
        fresh = {id(a) for a in new}
        for active in opened:
            if self._stopping.is_set():
                active.tailer.close()
                continue
            self.active[active.inode] = active
            # Reopening a parked or known file is routine; a file seen first is news.
            log.log(
                logging.INFO if id(active) in fresh else logging.DEBUG,
                "tailing file",
                extra={
                    "path": active.tailer.path,
                    "fingerprint": active.tailer.fingerprint.id,
                    "offset": active.tailer.offset,
                },
            )
        self._wake.set()

    async def _watch(self) -> None:
        """Change events wake the reader at once; the periodic rescan stays the safety net."""
        roots = watch_roots(self.settings.sources)
        if not roots or not self.settings.file_events:
            return
        while not self._stopping.is_set():
            await self._watch_once(roots)
            # Gone (a file name it cannot decode, an inotify error): polling meanwhile.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), WATCH_RESTART_SECS)

    async def _watch_once(self, roots: list[Path]) -> None:
        self._events.live = True
        try:
            async for changes in watchfiles.awatch(
                *roots,
                watch_filter=None,
                debounce=50,
                step=10,
                stop_event=self._stopping,
                recursive=False,
            ):
                # A write wakes the reader; a create, rename or delete also needs a rescan.
                # A write to a file not open (parked, or waiting for its first line, which
                # may be rotated away soon) has that path looked at alone, at once.
                if any(change != watchfiles.Change.modified for change, _ in changes):
                    self._rescan.set()
                tailed = {active.tailer.path for active in self.active.values()}
                for change, path in changes:
                    shown = printable_path(path)
                    if change == watchfiles.Change.added:
                        self._preopen(path)
                    elif change == watchfiles.Change.modified and shown not in tailed:
                        self._events.targets[path] = None
                    self._events.dirty.add(shown)
                if self._events.targets:
                    self._events.targeted.set()
                self._wake.set()
        except Exception as exc:
            self._warnings.warn(
                "file change events unavailable; polling only until they are back",
                error=str(exc),
            )
        finally:
            self._events.live = False
            self._events.dirty.clear()

    def _preopen(self, path: str) -> None:
        """Open a just-created file that a source selects; the next scan identifies it."""
        source = source_of(self.settings.sources, path)
        if source is None or len(self.active) + len(self._preopened) >= self._max_open:
            return
        roots = self._events.roots.get(source)
        if roots is None:
            return  # before the first scan, which finds the file
        try:
            # On the event loop: never a blocking open (a FIFO), never out of the roots.
            fd = open_log_file(path, roots=roots.allowed)
            st = os.fstat(fd)
        except OSError:
            return  # gone already, or not a file we can read: the scan will say
        inode = (st.st_dev, st.st_ino)
        if inode in self.active or inode in self._preopened or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        self._preopened[inode] = (source, path, fd)

    def _take_preopened(
        self, by_inode: Mapping[InodeKey, Sequence[Checkpoint]], by_head: ByHead
    ) -> dict[InodeKey, tuple[str, str, Identified]]:
        """Identify the pre-opened files that have a complete first line by now."""
        ready: dict[InodeKey, tuple[str, str, Identified]] = {}
        for inode, (source, path, fd) in list(self._preopened.items()):
            try:
                found = identify_open(
                    fd,
                    fingerprint_bytes=self.settings.sources[source].fingerprint_bytes,
                    candidates=by_inode,
                    by_head=by_head,
                )
                empty_and_gone = found is None and os.fstat(fd).st_nlink == 0
            except OSError:
                found, empty_and_gone = None, True
            if found is not None:
                ready[inode] = (source, path, found)
            if found is not None or empty_and_gone:
                del self._preopened[inode]
            if found is None and empty_and_gone:
                os.close(fd)
        return ready

    def _close_preopened(self) -> None:
        for _, _, fd in self._preopened.values():
            os.close(fd)
        self._preopened.clear()

    # -------------------------------------------------------------- checkpoints

    async def _persist_periodically(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_SECS)
            # Forgetting runs here only, never during a scan: a scan first marks what
            # it found as seen, so a long downtime cannot make live files look gone.
            # It looks at every known file: not every second.
            if time.monotonic() - self._saved.forgot_at >= self._seen_resolution / 60:
                self._forget_old_checkpoints()
                self._saved.forgot_at = time.monotonic()
            # Now and then even when nothing was read: scans move ``seen_at``.
            stale = time.monotonic() - self._saved.at >= self._seen_resolution
            if self._checkpoints_dirty or stale:
                await self._persist_checkpoints()

    def _forget_old_checkpoints(self) -> None:
        """Drop files neither tailed nor found for ``checkpoint_grace_secs``: their
        checkpoints and delivered ranges (the next save deletes their rows)."""
        cutoff = time.time() - self.settings.checkpoint_grace_secs
        tailed = {a.tailer.fingerprint.id for a in self.active.values()}
        old = [f for f, c in self.known.items() if c.seen_at < cutoff and f not in tailed]
        for fid in old:
            del self.known[fid]
        self.shipped.forget(old)
        self._saved.forgotten.update(old)
        if old:
            self._checkpoints_dirty = True
            log.info("forgot checkpoints of long-gone files", extra={"count": len(old)})

    @property
    def _seen_resolution(self) -> float:
        """How far ``seen_at`` may move before its row is written again: scans refresh
        it for every file, and rewriting every row each scan would cost O(files)."""
        return max(1.0, min(SEEN_AT_SAVE_SECS, self.settings.checkpoint_grace_secs / 10))

    async def _persist_checkpoints(self) -> None:
        # One writer at a time: the periodic save, a scan's and the final one share a temp file.
        async with self._persist_lock:
            await self._persist_checkpoints_now()

    async def _persist_checkpoints_now(self) -> None:
        # What changed is taken on the event loop, where checkpoints change.
        self._checkpoints_dirty = False
        resolution = self._seen_resolution
        saved = self._saved.forms
        changed: dict[str, tuple[dict[str, Any], SavedForm]] = {}
        looked_at: list[Checkpoint] = []
        for fid, checkpoint in self.known.items():
            if not checkpoint.unsaved:
                continue
            # Cleared first: a change made while this save runs marks it again.
            checkpoint.unsaved = False
            looked_at.append(checkpoint)
            form = _saved_form(checkpoint, resolution)
            if saved.get(fid) != form:
                changed[fid] = (checkpoint.to_json(), form)
        # Forgotten files, saved or not (a row from before this start, say), lose their rows.
        forgotten = [fid for fid in self._saved.forgotten if fid not in self.known]
        if not changed and not forgotten:
            return
        try:
            await asyncio.to_thread(
                self.ledger.db.save_checkpoint_docs,
                [(fid, doc) for fid, (doc, _) in changed.items()],
                forgotten,
            )
        except OSError as exc:
            for checkpoint in looked_at:
                checkpoint.unsaved = True
            self._checkpoints_dirty = True
            # Retried every second: one line a minute (with a count) is enough.
            self._errors.warn("could not write checkpoints; will retry", error=str(exc))
            return
        for fid, (_, form) in changed.items():
            saved[fid] = form
        for fid in forgotten:
            saved.pop(fid, None)
        self._saved.forgotten.difference_update(forgotten)
        self._saved.at = time.monotonic()
