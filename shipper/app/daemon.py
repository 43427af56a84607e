"""The lifecycle of ``shipper run`` and ``shipper backfill``: recover, start the
stages, pump lines through them, reload, drain and stop.

Data moves one way: files -> reader -> chain -> batcher -> sealer -> spool ->
uploader -> store. The only thing that flows back is the acknowledgement that a
batch is sealed, which moves the file's checkpoint. When the spool is full the
reader stops, so the source files are the buffer and memory stays flat. The
daemon holds no file state and no seal logic: it wires the parts together and
starts and stops them in phases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

from shipper.app.allocator import limit_malloc_arenas
from shipper.app.backfill import Backfill
from shipper.app.chain import build_chain
from shipper.app.guard_link import GuardLink
from shipper.app.recover import resume_positions
from shipper.app.refiller import Refiller
from shipper.batch.batcher import BatchLimits
from shipper.batch.objectkey import compile_template
from shipper.config import Settings, load_config
from shipper.deliver.ledger import Ledger
from shipper.deliver.sinks import Sink, build_sink
from shipper.deliver.uploader import Uploader
from shipper.errors import ConfigError, StateError
from shipper.exit_codes import ExitCode
from shipper.files.dirs import PRIVATE_DIR_MODE, make_dirs
from shipper.files.durable import InodeKey
from shipper.housekeeping.disk_guard import DiskGuard
from shipper.ops.health import HealthServer
from shipper.ops.metrics import Metrics
from shipper.ops.report import StatusReport
from shipper.ops.sdnotify import Notifier
from shipper.spool import refill
from shipper.spool.entry import SpoolEntry
from shipper.spool.sealer import Sealer
from shipper.spool.spool import Spool
from shipper.state.checkpointer import Checkpointer
from shipper.state.delivered import ShippedIndex
from shipper.state.migration import migrate_legacy_state
from shipper.state.statedb import STATE_DB_NAME, StateDB
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import RefusedFiles
from shipper.tail.context import TailContext
from shipper.tail.copies import CopyTracker
from shipper.tail.files import ActiveFile
from shipper.tail.lost import LostFiles
from shipper.tail.opener import Opener
from shipper.tail.reader import Reader
from shipper.tail.scanner import Scanner
from shipper.tail.watch import Watcher

log = logging.getLogger(__name__)

#: How often systemd's STATUS= line is refreshed.
SYSTEMD_STATUS_SECS = 10.0
#: At a reload, how long puts already running may take to finish: below systemd's
#: WatchdogSec (30), since no pings go out meanwhile.
RELOAD_IN_FLIGHT_SECS = 10.0


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


class Daemon:
    def __init__(
        self, settings: Settings, *, sink: Sink | None = None, one_shot: bool = False
    ) -> None:
        self.settings = settings
        self.host = socket.gethostname()
        state_dir = settings.state_dir
        self.spool = Spool(state_dir / "spool")
        #: What the ledger proves delivered, per file: retention deletes by it.
        self.shipped = ShippedIndex()
        self.ledger = Ledger(StateDB(state_dir / STATE_DB_NAME), self.shipped)
        self.sink = sink or build_sink(settings.sink)
        keys = compile_template(
            settings.sink.key_template,
            prefix=settings.sink.prefix,
            static=settings.sink.key_fields,
            host=self.host,
            codec=settings.sink.codec,
        )
        self.chain = build_chain(
            host=self.host,
            environ=os.environ,
            parse=settings.parse,
            enrich=settings.enrich,
            redact=settings.redact,
            sample=settings.sample,
        )
        counters: Counter[str] = Counter()
        limits = BatchLimits(
            settings.batch.max_bytes, settings.batch.max_records, settings.batch.max_age_secs
        )
        self.ctx = ctx = TailContext(
            settings=settings,
            limits=limits,
            one_shot=one_shot,
            counters=counters,
            refused=RefusedFiles(counters),
        )
        # The stages, in the order a line meets them.
        self.checkpointer = Checkpointer(ctx, self.ledger.db, self.shipped)
        self.opener = Opener(ctx, self.checkpointer.persist)
        self.lost = LostFiles(ctx, self.opener)
        self.scanner = Scanner(ctx, self.opener, CopyTracker(ctx), self.lost)
        self.watcher = Watcher(ctx, self.scanner, self.opener)
        self.sealer = Sealer(ctx, spool=self.spool, keys=keys, chain=self.chain)
        self.reader = Reader(ctx, self.sealer)
        self.refiller = Refiller(
            ctx,
            sealer=self.sealer,
            opener=self.opener,
            lost=self.lost,
            spool=self.spool,
            shipped=self.shipped,
            chain=self.chain,
        )
        self.guard_link = GuardLink(ctx, spool=self.spool, keys=keys, host=self.host)
        self.guard = DiskGuard(settings, self.shipped, self.guard_link, refused=ctx.refused)
        #: ``shipper backfill``: the run ends once every file is read and delivered.
        self.backfill = Backfill(ctx, self.scanner, self.watcher) if one_shot else None
        self.report = StatusReport(ctx, spool=self.spool, guard=self.guard, counters=self.counters)
        self.metrics = Metrics(self.report)
        self.notifier = Notifier.from_env()
        self.uploader: Uploader | None = None
        self._lock_fd: int | None = None
        self._forced = asyncio.Event()
        #: Set by a SIGHUP with a valid, changed config: run() returns to be run again
        #: with these settings (the state on disk carries over).
        self.reload_settings: Settings | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> dict[InodeKey, ActiveFile]:
        """The files open now."""
        return self.ctx.files.active

    async def run(self) -> ExitCode:
        limit_malloc_arenas()  # before any thread allocates
        if self.backfill is not None:
            # A backfill runs beside the daemon; its progress is in its log lines.
            return await self._run()
        health = self.ctx.settings.health
        server = HealthServer(
            health.host,
            health.port,
            self.report.readiness,
            status=self.report.status,
            metrics=self.metrics.render,
        )
        await server.start()
        log.info("health endpoint listening", extra={"host": health.host, "port": server.port})
        try:
            return await self._run()
        finally:
            await server.stop()

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
            concurrency=self.ctx.settings.sink.upload_concurrency,
            on_space_freed=self.ctx.space_freed.set,
            on_damaged=lambda damaged: loop.call_soon_threadsafe(
                self.refiller.found_damaged, damaged
            ),
            observe_latency=self.metrics.upload_seconds.observe,
        )
        for part in (self.sealer, self.refiller, self.guard_link):
            part.submit_upload = self.uploader.submit
        self.report.uploader = self.uploader
        for entry in spooled:
            self.uploader.submit(entry)
        self.uploader.start()
        # Before any reading: the chain sees the old range alone, as it first did.
        await self.refiller.refill_damaged()
        # The first scan applies ``read_from`` to the files already there.
        await self.scanner.scan(initial=True)
        background = [
            asyncio.create_task(self.checkpointer.persist_periodically(), name="checkpoints")
        ]
        if not self.ctx.one_shot:
            background += [
                asyncio.create_task(self.watcher.watch(), name="watch"),
                asyncio.create_task(self.watcher.discover(), name="discover"),
                asyncio.create_task(self.report.watch_stale(), name="stale"),
                asyncio.create_task(self.guard.run(), name="disk_guard"),
            ]
        for task in background:
            task.add_done_callback(_report_crash)
        self.ctx.started = True
        log.info(
            "started",
            extra={
                "sources": sorted(self.ctx.settings.sources),
                "sink": self.ctx.settings.sink.type,
            },
        )
        self.notifier.notify(ready="1", status=self.report.status_line())
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
            in_flight_secs = min(self.ctx.settings.shutdown_timeout_secs, RELOAD_IN_FLIGHT_SECS)
            in_flight_secs = in_flight_secs if reloading else 0.0
            await self.uploader.stop(in_flight_secs=in_flight_secs)
            await self.checkpointer.persist()
            self.ledger.db.close()
            self.sink.close()
            self.notifier.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            # Between this run and a reloaded one, a SIGHUP must not end the process.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            self._release_lock()

    def _reload_requested(self) -> None:
        if self.ctx.stopping.is_set():
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
        path = self.ctx.settings.config_path
        if path is None:
            log.error("cannot reload: the daemon was not started from a config file")
            return
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self.ctx.counters["config_reloads_rejected"] += 1
            log.error(
                "config reload rejected; still running on the previous config",
                extra={"path": str(path), "problems": [str(p) for p in exc.problems]},
            )
            return
        changed = [
            f.name
            for f in dataclasses.fields(Settings)
            if getattr(new, f.name) != getattr(self.ctx.settings, f.name)
        ]
        if self.ctx.stopping.is_set():
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
        if self.ctx.stopping.is_set():
            log.warning("second stop signal: exiting without waiting for uploads")
            self._forced.set()
        else:
            log.info(
                "stopping: sealing open batches"
                + ("" if self.reload_settings is not None else " and draining uploads")
            )
            self.ctx.stopping.set()
        self.ctx.wake.set()

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
            if not self.ctx.started:
                # Recovering (converting an old state directory, say) while the loop is
                # alive: more time, past TimeoutStartSec, a tick at a time.
                fields["extend_timeout_usec"] = str(int(tick * 3 * 1e6))
            if time.monotonic() - last_status >= SYSTEMD_STATUS_SECS:
                fields["status"] = self.report.status_line()
                last_status = time.monotonic()
            if fields:
                self.notifier.notify(**fields)

    async def _drain(self) -> ExitCode:
        assert self.uploader is not None
        if self.backfill is not None:
            return await self.backfill.drain(
                self.uploader,
                self._drain_after_stop,
                counters=self.counters,
                reloading=lambda: self.reload_settings is not None,
            )
        return await self._drain_after_stop()

    async def _drain_after_stop(self) -> ExitCode:
        assert self.uploader is not None
        if self.reload_settings is not None:
            # Nothing to wait for: every sealed batch is in the spool, and the next
            # run uploads it (a batch already stored is answered with a 412).
            log.info("stopped reading for the reload", extra={"spool_bytes": self.spool.used_bytes})
            return ExitCode.OK
        self.notifier.notify(stopping="1", status="stopping: draining uploads")
        timeout = self.ctx.settings.shutdown_timeout_secs
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
        result.update(self.ctx.counters)
        result.update(self.guard.counters)
        result.update(self.ctx.refusals.counters)
        result.update(self.spool.counters)
        if self.uploader is not None:
            result.update(self.uploader.counters)
        return result

    def _recover(self) -> list[SpoolEntry]:
        """Runs in a thread: lock the state directory, load it, return the spooled entries."""
        state_dir = self.ctx.settings.state_dir
        try:
            make_dirs(state_dir, PRIVATE_DIR_MODE)
            self._take_lock(state_dir / "lock")
            self.ledger.db.open()
            migrate_legacy_state(
                state_dir,
                self.ledger.db,
                grace_secs=self.ctx.settings.checkpoint_grace_secs,
                now=time.time(),
            )
            stored = self.ledger.db.load()
            spooled, damaged = self.spool.recover()
        except OSError as exc:
            raise StateError(f"state_dir {state_dir}: {exc}") from exc
        for problem in stored.unreadable:
            log.error("unreadable state row skipped", extra={"row": problem})
        resumed = resume_positions(stored.checkpoints, spooled, stored.shipped)
        self.shipped.load(stored.shipped)  # after: with the checkpoints' fingerprints
        self.checkpointer.load(stored.checkpoints, resumed)
        for entry in damaged:
            # A file that only a damaged entry still names (its checkpoints lost too):
            # known from that entry's end, so it is not read from byte 0 as new.
            fid = entry.fingerprint_id
            if fid is not None and fid not in self.ctx.known and entry.fingerprint and entry.source:
                self.ctx.known[fid] = Checkpoint(
                    entry.fingerprint, entry.source, entry.file_path or "", entry.end or 0
                )
        self.refiller.plan = refill.plan(damaged, self.ctx.known, spooled, self.shipped)
        self.ctx.had_state = bool(self.ctx.known)
        log.info(
            "recovered state",
            extra={
                "known_files": len(self.ctx.known),
                "shipped_files": len(stored.shipped),
                "spooled_entries": len(spooled),
                "damaged_entries": len(damaged),
                "spool_bytes": self.spool.used_bytes,
            },
        )
        return spooled

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

    async def _pump(self) -> None:
        """Read, batch and seal until asked to stop; then seal what is open."""
        try:
            while not self.ctx.stopping.is_set():
                if not await self.sealer.wait_for_spool_space():
                    break
                async with self.ctx.reading:
                    if self.refiller.plan.pending and time.monotonic() >= self.refiller.retry_at:
                        await self.refiller.refill_damaged()
                    progressed = await self.reader.read_round()
                    await self.reader.seal_aged()
                    await self.reader.finish_done_files()
                    await self.reader.park_idle_files()
                if self.backfill is not None and await self.backfill.read_through():
                    break
                if not progressed:
                    await self.reader.idle()
        finally:
            await self.reader.seal_all_open()
