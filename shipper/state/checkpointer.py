"""Saving the checkpoints: only the rows that changed, now and then, and forgetting
files long gone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from shipper.state.delivered import ShippedIndex
from shipper.state.statedb import StateDB
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.context import TailContext
from shipper.tail.known import KnownFiles

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_SECS = 1.0
#: Rows written per transaction: grouped, and bounded in memory however many changed.
CHECKPOINT_ROWS_PER_SAVE = 5000
#: At most this stale, a file's saved ``seen_at`` (when it was last found): enough to
#: forget it in time, without writing every file's row at every scan.
SEEN_AT_SAVE_SECS = 3600.0


#: What a save compares to know whether a checkpoint's row must be written again: a
#: hash of the row's fields, not the fields (a tuple of them cost 130 bytes per known
#: file). Two rows hashing alike by chance would leave a change unwritten until the
#: file's next change: the same as a crash before the save, which the spool and the
#: deliveries recover from.
SavedForm = int


def saved_form(checkpoint: Checkpoint, seen_resolution: float) -> SavedForm:
    c = checkpoint
    return hash(
        (
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
    )


@dataclass(slots=True)
class SavedCheckpoints:
    """What the state database holds of the checkpoints: a save writes only the rows
    that changed, and deletes those of forgotten files."""

    #: Files forgotten whose rows are still to be deleted.
    forgotten: set[str] = field(default_factory=set)
    at: float = field(default_factory=time.monotonic)
    #: When forgotten files were last looked for.
    forgot_at: float = -math.inf


class Checkpointer:
    """Writes the checkpoints of the known files to the state database."""

    def __init__(self, ctx: TailContext, db: StateDB, shipped: ShippedIndex) -> None:
        self.ctx = ctx
        self.db = db
        self.shipped = shipped
        self.saved = SavedCheckpoints()
        self._persist_lock = asyncio.Lock()

    def load(self, stored: Mapping[str, Checkpoint], resumed: Mapping[str, Checkpoint]) -> None:
        """At start: the rows as saved (``stored``), and the positions the files resume
        at (``resumed``: moved on by the spool and the deliveries)."""
        resolution = self.seen_resolution
        for fid, checkpoint in resumed.items():
            row = stored.get(fid)
            if row is not None:
                checkpoint.saved_as = saved_form(row, resolution)
        self.ctx.known = KnownFiles(resumed)
        # Rows of files not resumed go at the next save.
        self.saved.forgotten.update(f for f in stored if f not in self.ctx.known)
        self.ctx.checkpoints_dirty = True  # what the spool and the deliveries moved

    async def persist_periodically(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_SECS)
            # Forgetting runs here only, never during a scan: a scan first marks what
            # it found as seen, so a long downtime cannot make live files look gone.
            # It looks at every known file: not every second.
            if time.monotonic() - self.saved.forgot_at >= self.seen_resolution / 60:
                self.forget_old()
                self.saved.forgot_at = time.monotonic()
            # Now and then even when nothing was read: scans move ``seen_at``.
            stale = time.monotonic() - self.saved.at >= self.seen_resolution
            if self.ctx.checkpoints_dirty or stale:
                await self.persist()

    def forget_old(self) -> None:
        """Drop files neither tailed nor found for ``checkpoint_grace_secs``: their
        checkpoints and delivered ranges (the next save deletes their rows)."""
        cutoff = time.time() - self.ctx.settings.checkpoint_grace_secs
        tailed = {a.tailer.fingerprint.id for a in self.ctx.files.active.values()}
        old = [f for f, c in self.ctx.known.items() if c.seen_at < cutoff and f not in tailed]
        for fid in old:
            self.ctx.known[fid].saved_as = None  # its row goes: should it come back, write it
            del self.ctx.known[fid]
        self.shipped.forget(old)
        self.saved.forgotten.update(old)
        if old:
            self.ctx.checkpoints_dirty = True
            log.info("forgot checkpoints of long-gone files", extra={"count": len(old)})

    @property
    def seen_resolution(self) -> float:
        """How far ``seen_at`` may move before its row is written again: scans refresh
        it for every file, and rewriting every row each scan would cost O(files)."""
        return max(1.0, min(SEEN_AT_SAVE_SECS, self.ctx.settings.checkpoint_grace_secs / 10))

    async def persist(self) -> None:
        # One writer at a time: the periodic save, a scan's and the final one share a temp file.
        async with self._persist_lock:
            await self.persist_now()

    async def persist_now(self) -> None:
        # What changed is taken on the event loop, where checkpoints change.
        self.ctx.checkpoints_dirty = False
        pending: list[Checkpoint] = []
        for checkpoint in self.ctx.known.values():
            if checkpoint.unsaved:
                # Cleared first: a change made while this save runs marks it again.
                checkpoint.unsaved = False
                pending.append(checkpoint)
        # Forgotten files, saved or not (a row from before this start, say), lose their rows.
        forgotten = [fid for fid in self.saved.forgotten if fid not in self.ctx.known]
        # A transaction per CHECKPOINT_ROWS_PER_SAVE rows, each encoded just before it:
        # a first save of 100,000 files holds a few MiB of rows at a time, not 40.
        for at in range(0, max(len(pending), 1), CHECKPOINT_ROWS_PER_SAVE):
            chunk = pending[at : at + CHECKPOINT_ROWS_PER_SAVE]
            if not await self.save_rows(chunk, forgotten if at == 0 else []):
                for checkpoint in pending[at:]:
                    checkpoint.unsaved = True
                self.ctx.checkpoints_dirty = True
                return
        self.saved.at = time.monotonic()

    async def save_rows(self, checkpoints: list[Checkpoint], forgotten: list[str]) -> bool:
        """Write the rows of ``checkpoints`` that changed since saved, and delete those
        of ``forgotten``, in one transaction; False if the database refused."""
        resolution = self.seen_resolution
        # Each row copied to a bytes of its own size: as ``orjson.dumps`` leaves them
        # (shrunk in place from a bigger buffer) they took 4 KiB each for good.
        changed: dict[str, tuple[bytes, SavedForm, Checkpoint]] = {}
        for checkpoint in checkpoints:
            fid = checkpoint.fingerprint.id
            if self.ctx.known.get(fid) is not checkpoint:
                continue  # forgotten (or replaced) since: a row now would outlive it
            form = saved_form(checkpoint, resolution)
            if checkpoint.saved_as != form:
                row = bytes(memoryview(orjson.dumps(checkpoint.to_json())))
                changed[fid] = (row, form, checkpoint)
        if not changed and not forgotten:
            return True
        try:
            await asyncio.to_thread(
                self.db.save_checkpoint_rows,
                [(fid, row) for fid, (row, _, _) in changed.items()],
                forgotten,
            )
        except OSError as exc:
            # Retried every second: one line a minute (with a count) is enough.
            self.ctx.errors.warn("could not write checkpoints; will retry", error=str(exc))
            return False
        for _, form, checkpoint in changed.values():
            checkpoint.saved_as = form
        self.saved.forgotten.difference_update(forgotten)
        return True
