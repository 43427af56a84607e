"""``shipper backfill`` as a run mode: read every file the sources select to its
end, deliver all of it, and exit with whether it is complete.

The reader follows the same rules as the daemon's, with ``ctx.one_shot`` set: files
are finished at their end (as rotated ones are), compressed rotations are read too,
and a file that cannot be read is recorded in ``ctx.backfill.skipped``.
"""

from __future__ import annotations

__all__ = ["Backfill"]

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping

from shipper.deliver.uploader import Uploader
from shipper.exit_codes import ExitCode
from shipper.files.durable import printable_path
from shipper.tail.context import TailContext
from shipper.tail.scanner import Scanner
from shipper.tail.watch import Watcher

log = logging.getLogger(__name__)


class Backfill:
    def __init__(self, ctx: TailContext, scanner: Scanner, watcher: Watcher) -> None:
        self.ctx = ctx
        self.scanner = scanner
        self.watcher = watcher

    async def read_through(self) -> bool:
        """True once every file is read through; opens more while some wait."""
        files = self.ctx.files
        if files.active:
            return False
        if files.waiting:
            await self.scanner.scan(initial=False, targeted=self.watcher.next_waiting())
            return False
        if files.waiting_to_open or self.ctx.backfill.more:
            await self.scanner.scan(initial=False)
            return False
        return True

    async def drain(
        self,
        uploader: Uploader,
        drain_after_stop: Callable[[], Awaitable[ExitCode]],
        *,
        counters: Callable[[], Mapping[str, int]],
        reloading: Callable[[], bool],
    ) -> ExitCode:
        """Read through: wait for every delivery, then say whether all of it went.
        Stopped before: the usual drain, and the run is incomplete."""
        if not self.ctx.stopping.is_set() and await self._delivered(uploader):
            return self.outcome(counters())
        code = await drain_after_stop()
        if code == ExitCode.OK and not reloading():
            log.warning("backfill interrupted; run it again to go on from where it stopped")
            return ExitCode.INCOMPLETE
        return code

    async def _delivered(self, uploader: Uploader) -> bool:
        """Everything is read: wait until it is all delivered, however long the store
        takes. A stop signal ends the wait (the usual drain follows)."""
        delivered = asyncio.create_task(uploader.drain(None))
        stop = asyncio.create_task(self.ctx.stopping.wait())
        await asyncio.wait({delivered, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if delivered.done():
            return delivered.result()
        delivered.cancel()
        return False

    def outcome(self, counters: Mapping[str, int]) -> ExitCode:
        """Complete only if every file was read and every batch delivered."""
        skipped = self.ctx.backfill.skipped
        for path in self.ctx.files.unidentified:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) > 0:  # an empty file has nothing to ship
                    skipped[printable_path(path)] = (
                        "its first line is not complete (no newline yet)"
                    )
        undelivered = counters.get("quarantined", 0) + counters.get("spool_lost", 0)
        if skipped or undelivered:
            log.error(
                "backfill incomplete: files left unread or batches not delivered",
                extra={
                    "unread": skipped,
                    "quarantined": counters.get("quarantined", 0),
                    "spool_lost": counters.get("spool_lost", 0),
                },
            )
            return ExitCode.INCOMPLETE
        log.info(
            "backfill complete: every file read to its end and delivered",
            extra={"counters": dict(counters)},
        )
        return ExitCode.OK
