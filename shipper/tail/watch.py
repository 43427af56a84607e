"""Change events and the periodic rescan: when the reader looks at files again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import watchfiles

from shipper.files.durable import printable_path
from shipper.tail.context import TailContext
from shipper.tail.globs import events_see_every_write, source_of, watch_roots
from shipper.tail.opener import Opener
from shipper.tail.scanner import Scanner

log = logging.getLogger(__name__)

#: After a scan, at least this many times as long without one (scans stay within
#: about 5% of a core), and at most SCAN_REST_MAX_SECS.
SCAN_REST_FACTOR = 19.0
SCAN_REST_MAX_SECS = 30.0
#: While change events name every write (see ``events_see_every_write``), the
#: periodic scan only catches an event lost (a full inotify queue): it rests 99
#: times as long as it took (1% of a core), at most SAFETY_SCAN_REST_MAX_SECS. A
#: create, rename or delete still has a scan after the rest above.
SAFETY_SCAN_REST_FACTOR = 99.0
SAFETY_SCAN_REST_MAX_SECS = 300.0
#: After change events fail, how long to poll before watching again.
WATCH_RESTART_SECS = 30.0


def scan_rests(spent: float, *, poll_interval: float, events_see_all: bool) -> tuple[float, float]:
    """After a scan that took ``spent`` seconds: how long until a scan a change event
    asked for may start, and until the next periodic one.

    A scan costs O(files matched), so both rest in proportion to it: scanning takes
    a bounded share of a core however many files there are.
    """
    rest = min(spent * SCAN_REST_FACTOR, SCAN_REST_MAX_SECS)
    if events_see_all:
        sweep = min(spent * SAFETY_SCAN_REST_FACTOR, SAFETY_SCAN_REST_MAX_SECS)
    else:
        sweep = rest
    return rest, max(sweep, poll_interval)


class Watcher:
    """Wakes the reader on change events, and schedules scans: all files now and
    then, the paths events name and the files waiting for a slot at once."""

    def __init__(self, ctx: TailContext, scanner: Scanner, opener: Opener) -> None:
        self.ctx = ctx
        self.scanner = scanner
        self.opener = opener

    async def watch(self) -> None:
        """Change events wake the reader at once; the periodic rescan stays the safety net."""
        roots = watch_roots(self.ctx.settings.sources)
        if not roots or not self.ctx.settings.file_events:
            return
        while not self.ctx.stopping.is_set():
            await self.watch_once(roots)
            # Gone (a file name it cannot decode, an inotify error): polling meanwhile.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), WATCH_RESTART_SECS)

    async def watch_once(self, roots: list[Path]) -> None:
        self.ctx.events.live = True
        try:
            async for changes in watchfiles.awatch(
                *roots,
                watch_filter=None,
                debounce=50,
                step=10,
                stop_event=self.ctx.stopping,
                recursive=False,
            ):
                # A write wakes the reader; a create, rename or delete also needs a rescan.
                # A write to a file not open (parked, or waiting for its first line, which
                # may be rotated away soon) has that path looked at alone, at once.
                if any(change != watchfiles.Change.modified for change, _ in changes):
                    self.ctx.rescan.set()
                tailed = {active.tailer.path for active in self.ctx.files.active.values()}
                for change, path in changes:
                    shown = printable_path(path)
                    if change == watchfiles.Change.added:
                        self.opener.preopen(path)
                    elif change == watchfiles.Change.modified and shown not in tailed:
                        self.ctx.events.targets[path] = None
                    self.ctx.events.dirty.add(shown)
                if self.ctx.events.targets:
                    self.ctx.events.targeted.set()
                self.ctx.wake.set()
        except Exception as exc:
            self.ctx.warnings.warn(
                "file change events unavailable; polling only until they are back",
                error=str(exc),
            )
        finally:
            self.ctx.events.live = False
            self.ctx.events.dirty.clear()
            # Events missed from now on: scan soon, and on the polling schedule after.
            self.ctx.rescan.set()

    async def discover(self) -> None:
        """Scan everything every ``poll_interval_secs`` (and soon after a create, rename
        or delete), resting after each scan in proportion to what it cost (longer while
        change events name every write: see ``scan_rests``); meanwhile,
        look at once at the paths change events name and at files waiting for a slot.

        It runs beside the reader, not between its reads, so a file that is
        created and rotated away quickly is opened (and so kept readable) early.
        """
        while not self.ctx.stopping.is_set():
            self.ctx.rescan.clear()
            spent = await self.timed_scan(targeted=None)
            rest, sweep = scan_rests(
                spent,
                poll_interval=self.ctx.settings.poll_interval_secs,
                events_see_all=self.ctx.events.live
                and events_see_every_write(self.ctx.settings.sources),
            )
            started = time.monotonic()
            rested, next_scan = started + rest, started + sweep
            while not self.ctx.stopping.is_set():
                targets = self.take_targets()
                if targets:
                    await self.timed_scan(targeted=targets)
                    continue
                now = time.monotonic()
                wanted = rested if self.ctx.rescan.is_set() else next_scan
                if now >= wanted:
                    break
                events = [self.ctx.events.targeted, self.ctx.stopping]
                if not self.ctx.rescan.is_set():
                    events.append(self.ctx.rescan)
                await self.first_of(events, wanted - now)

    async def timed_scan(self, *, targeted: list[tuple[str, str]] | None) -> float:
        """One scan; the smaller of the wall and process time it took.

        The smaller: other processes' load inflates the one, the reader's own work
        meanwhile the other.
        """
        wall, cpu = time.monotonic(), time.process_time()
        try:
            await self.scanner.scan(initial=False, targeted=targeted)
        except OSError as exc:
            self.ctx.warnings.warn("scan failed; will retry", error=str(exc))
        except Exception:
            # Discovery must outlive a bug in one scan, or new files go unread.
            log.exception("scan failed unexpectedly; will retry")
        return min(time.monotonic() - wall, time.process_time() - cpu)

    async def first_of(self, events: Iterable[asyncio.Event], timeout: float) -> None:
        """Until one of ``events`` is set, or ``timeout`` seconds pass."""
        waiters = {asyncio.ensure_future(event.wait()) for event in events}
        _, pending = await asyncio.wait(
            waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()

    def take_targets(self) -> list[tuple[str, str]]:
        """``(source, path)`` to look at alone now: paths events named, then as many
        files waiting for a slot as there are free slots."""
        self.ctx.events.targeted.clear()
        named, self.ctx.events.targets = self.ctx.events.targets, {}
        targets: list[tuple[str, str]] = []
        for path in named:
            source = source_of(self.ctx.settings.sources, path)
            if source is not None:
                targets.append((source, path))
            elif any("**" in p for s in self.ctx.settings.sources.values() for p in s.include):
                self.ctx.rescan.set()  # a ``**`` glob may select it: only a scan can tell
        return targets + self.next_waiting()

    def next_waiting(self) -> list[tuple[str, str]]:
        """The files first in line for a slot, as many as are free."""
        return self.ctx.files.waiting.first(
            self.ctx.files.free_slots(self.ctx.settings.max_open_files)
        )
