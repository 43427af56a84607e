"""Read rounds: a chunk of each file due, handed on; finishing rotated files, parking idle ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from shipper.files.markers import remember
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import CompressedFileTailer
from shipper.tail.context import TailContext
from shipper.tail.decompress import Refusal
from shipper.tail.files import ActiveFile, Parked
from shipper.tail.seams import Consumer, Sealed, warn_failed
from shipper.tail.tailer import LineChunk

log = logging.getLogger(__name__)

#: How long one hop to the reading thread goes on reading files before the event
#: loop takes their results (accepts what was sealed, starts uploads).
READ_HOP_SECS = 0.05
#: Longest the reader sleeps when idle; change events usually wake it sooner.
IDLE_WAIT_SECS = 0.25


@dataclass(slots=True)
class ReadStep:
    """One file's read step: what was sealed, and how the read went."""

    sealed: list[Sealed] = field(default_factory=list)
    got_bytes: bool = False
    truncated: bool = False
    read_error: OSError | None = None

    @property
    def error(self) -> OSError | None:
        if self.read_error is not None:
            return self.read_error
        return next((s.error for s in self.sealed if s.error is not None), None)


class Reader:
    """Reads the open files in rounds and hands their lines to the consumer."""

    def __init__(self, ctx: TailContext, consumer: Consumer) -> None:
        self.ctx = ctx
        self.consumer = consumer

    async def idle(self) -> None:
        if self.ctx.events.dirty and self.ctx.events.live:
            return  # written to during the round: read again at once
        next_look = (
            self.ctx.events.next_sweep
            if self.ctx.events.live
            else time.monotonic() + IDLE_WAIT_SECS
        )
        deadlines = [next_look]
        for active in self.ctx.files.active.values():
            pending = active.batcher.pending
            if pending is not None:
                deadlines.append(pending.opened_at + self.ctx.limits.max_age_secs)
            held_until = None if active.joiner is None else active.joiner.deadline()
            if held_until is not None:
                deadlines.append(held_until)
        timeout = max(0.0, min(deadlines) - time.monotonic())
        self.ctx.wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ctx.wake.wait(), timeout)

    async def read_round(self) -> bool:
        """One chunk from every active file; True if any produced bytes."""
        progressed = False
        actives = list(self.ctx.files.active.values())
        # Lines of a rotated file come before those of its successor.
        draining = [a for a in actives if a.tailer.finish_at_eof and not a.at_eof and not a.failing]
        due = draining or self.due_for_reading(actives)
        while due and not self.ctx.stopping.is_set():
            stepped = await asyncio.to_thread(self.read_steps, due)
            due = due[len(stepped) :]
            for active, step in stepped:
                self.consumer.settle(active, step.sealed)
                if step.read_error is not None:
                    warn_failed(self.ctx, active, step.read_error)
                active.at_eof = not step.got_bytes and step.error is None
                active.failing = step.error is not None
                active.truncated = active.truncated or step.truncated
                progressed = progressed or step.got_bytes
        return progressed

    def read_steps(self, actives: list[ActiveFile]) -> list[tuple[ActiveFile, ReadStep]]:
        """Runs in a thread: a read step of each file in turn, for about
        ``READ_HOP_SECS`` (one at least), or until a stop.

        One hop to the thread per file cost more than the read of a small file.
        """
        deadline = time.monotonic() + READ_HOP_SECS
        stepped = []
        for active in actives:
            stepped.append((active, self.read_step(active)))
            if time.monotonic() >= deadline or self.ctx.stopping.is_set():
                break
        return stepped

    def due_for_reading(self, actives: list[ActiveFile]) -> list[ActiveFile]:
        """The files to read this round.

        Without change events every file is read every round (polling). With them,
        a file at its end is read again only when an event names it, and all files
        every ``poll_interval_secs`` (events can be missed: a symlinked file's
        target directory is not watched, and inotify queues overflow).
        """
        now = time.monotonic()
        if not self.ctx.events.live:
            return actives
        sweep = now >= self.ctx.events.next_sweep
        dirty, self.ctx.events.dirty = self.ctx.events.dirty, set()
        if sweep:
            self.ctx.events.next_sweep = now + self.ctx.settings.poll_interval_secs
        due = []
        for active in actives:
            busy = (
                not active.at_eof
                or active.failing
                or active.unsealed
                or active.tailer.finish_at_eof
            )
            if busy or active.tailer.path in dirty or (sweep and self.changed(active)):
                due.append(active)
        return due

    @staticmethod
    def changed(active: ActiveFile) -> bool:
        """Whether a file's size or modification time moved since the last sweep (an
        fstat: much cheaper than a read, which also checks the head and a marker)."""
        try:
            st = active.tailer.stat()
        except (OSError, AssertionError):
            return True  # let the read find out what happened
        stamp = (st.st_size, st.st_mtime_ns)
        changed, active.stamp = stamp != active.stamp, stamp
        return changed

    def read_step(self, active: ActiveFile) -> ReadStep:
        """Runs in a thread: seal what is owed, read a chunk, process it, seal what it completes."""
        owed = self.consumer.seal_owed(active)
        step = ReadStep(sealed=[owed])
        if owed.error is not None or active.unsealed:
            return step  # still owes batches (spool full, disk error): read no further
        try:
            if active.tailer.replaced_in_place():
                step.truncated = True
                return step
            before = active.tailer.offset
            if active.check_key_block:
                self.consumer.resume_key_block(active)
            chunk = active.tailer.read()
        except OSError as exc:
            step.read_error = exc
            return step
        if chunk is None:
            return step
        step.got_bytes = True
        self.ctx.counters["lines_read"] += len(chunk.lines)
        self.ctx.counters["bytes_read"] += active.tailer.offset - before
        self.consumer.process(active, active.lines_of(chunk))
        step.sealed.append(self.consumer.seal_owed(active))
        return step

    async def finish_done_files(self) -> None:
        """Close files rotated away and quiet for ``rotate_wait_secs``, and truncated files.

        A truncated file (copytruncate) is finished like a rotated one; the next scan
        identifies it again by its new first line, as a new file read from byte 0.
        """
        now = time.monotonic()
        for inode, active in list(self.ctx.files.active.items()):
            tailer = active.tailer
            wait = self.ctx.settings.sources[tailer.source].rotate_wait_secs
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
                await asyncio.to_thread(self.consumer.process, active, chunk)
            if not await self.consumer.flush(active):
                continue  # retried on the next round; the handle stays open meanwhile
            tailer.close()
            del self.ctx.files.active[inode]
            finished = self.ctx.known.get(tailer.fingerprint.id)
            if finished is not None and active.truncated:
                # Its unread lines may be in copytruncate's copy, looked for by the next
                # scan; only that search may call it finished (a crash before it must not).
                self.ctx.files.truncated_originals.append(finished)
            elif finished is not None:
                finished.finished = True
                self.ctx.checkpoints_dirty = True
            if isinstance(tailer, CompressedFileTailer) and tailer.stream.damage is not None:
                # Nothing after the damage can be read by anyone: say exactly what is lost.
                self.ctx.counters["compressed_damaged"] += 1
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
                self.compressed_refused(tailer, tailer.stream.refused, finished)
            if active.truncated:
                # Rate-limited: a file that keeps shrinking must not flood the log.
                self.ctx.warnings.warn(
                    "file truncated in place (copytruncate?); reading it again from its start",
                    path=tailer.path,
                    read_up_to=tailer.offset,
                )
                self.ctx.rescan.set()
            else:
                log.info(
                    "finished rotated file",
                    extra={"path": tailer.path, "fingerprint": tailer.fingerprint.id},
                )

    def compressed_refused(
        self, tailer: CompressedFileTailer, refusal: Refusal, checkpoint: Checkpoint | None
    ) -> None:
        """A compressed file refused as a bomb while being read: reported, left as it is.

        A backfill is then incomplete, and leaves it unfinished for its next run.
        """
        self.ctx.refused.report(
            tailer.path, refusal, fingerprint=tailer.fingerprint.id, unread_from=tailer.offset
        )
        if self.ctx.one_shot:
            self.ctx.backfill.skipped[tailer.path] = f"refused: {refusal.reason}"
            if checkpoint is not None:
                checkpoint.finished = False

    async def park_idle_files(self) -> None:
        """Close files at their end that are idle, or that others are waiting to replace.

        A parked file keeps its checkpoint; the next scan that finds it grown (or
        renamed away) opens it again by fingerprint and reads on from there.
        """
        now = time.monotonic()
        resting = [
            a
            for a in self.ctx.files.active.values()
            if a.at_eof
            and not a.tailer.finish_at_eof
            and not a.unsealed
            and not a.truncated
            and not (a.joiner is not None and a.joiner.holding)
        ]
        resting.sort(key=lambda a: a.tailer.last_growth)
        idle = [
            a
            for a in resting
            if now - a.tailer.last_growth >= self.ctx.settings.close_inactive_secs
        ]
        over = (
            len(self.ctx.files.active)
            + self.ctx.files.waiting_to_open
            - self.ctx.settings.max_open_files
        )
        chosen = resting[: max(len(idle), over)]
        for active in await self.consumer.flush_together(chosen):
            checkpoint = self.ctx.known.get(active.tailer.fingerprint.id)
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
            del self.ctx.files.active[active.inode]
            self.ctx.files.parked[active.inode] = Parked(checkpoint, consumed, mtime_ns)
        if chosen:
            # Files waiting for a slot may now be opened, at once, each looked at alone:
            # a scan of everything would cost O(files) at every park.
            if self.ctx.files.waiting:
                self.ctx.events.targeted.set()
            self.ctx.files.waiting_to_open = 0

    async def seal_aged(self) -> None:
        now = time.monotonic()
        for active in list(self.ctx.files.active.values()):
            joiner = active.joiner
            deadline = None if joiner is None else joiner.deadline()
            if joiner is not None and deadline is not None and now >= deadline:
                held = joiner.flush(time.time())
                if held is not None:
                    await asyncio.to_thread(self.consumer.process, active, held)
        # A source's window closes with its oldest waiting line: then every file of it
        # with lines waiting is cut, and their batches share objects (one object per
        # source and window, however many files feed it).
        actives = list(self.ctx.files.active.values())
        due = {a.tailer.source for a in actives if a.batcher.due(now)}
        await self.consumer.flush_together(
            [a for a in actives if a.tailer.source in due and a.batcher.pending is not None]
        )

    async def seal_all_open(self) -> None:
        # The disk guard may be letting go of a file: wait for it, then hold it off.
        async with self.ctx.reading:
            await self.seal_all_open_now()

    async def seal_all_open_now(self) -> None:
        actives = list(self.ctx.files.active.values())
        for active in actives:
            held = None
            if active.joiner is not None and active.tailer.finish_at_eof:
                # A live file's held record is read again, whole, at the next start;
                # a rotated file may be gone by then.
                held = active.joiner.flush(time.time())
            if held is not None:
                await asyncio.to_thread(self.consumer.process, active, held)
        # A few batches past the spool's limits, rather than reading them again.
        await self.consumer.flush_together(actives, beyond_limits=True)
        for active in actives:
            if active.unsealed:
                log.error(
                    "could not seal open batches at shutdown; their lines will be read again",
                    extra={"path": active.tailer.path, "batches": len(active.unsealed)},
                )
            active.tailer.close()
        self.ctx.files.active.clear()
        self.ctx.files.close_preopened()
