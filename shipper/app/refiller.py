"""Damaged spool entries: their lines read again from the files that still hold them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from shipper.batch.batcher import Batch
from shipper.files.markers import Marker
from shipper.spool import refill
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.spool.sealer import Sealer
from shipper.spool.spool import Spool
from shipper.state.delivered import ShippedIndex
from shipper.tail.context import TailContext
from shipper.tail.lost import LostFiles
from shipper.tail.opener import Opener
from shipper.transform.chain import Chain

log = logging.getLogger(__name__)

#: Wait before reading a damaged entry's lines again after a local error.
REFILL_RETRY_SECS = 10.0


class Refiller:
    """Reads the ranges of damaged entries again, seals them anew, sets the old aside."""

    def __init__(
        self,
        ctx: TailContext,
        *,
        sealer: Sealer,
        opener: Opener,
        lost: LostFiles,
        spool: Spool,
        shipped: ShippedIndex,
        chain: Chain,
    ) -> None:
        self.ctx = ctx
        self.sealer = sealer
        self.opener = opener
        self.lost = lost
        self.spool = spool
        self.shipped = shipped
        self.chain = chain
        self.plan = refill.Plan([], [], [])
        self.retry_at = 0.0
        #: Queues a sealed entry for upload; set once the uploader runs.
        self.submit_upload: Callable[[SpoolEntry], None] | None = None

    def found_damaged(self, damaged: DamagedEntry) -> None:
        """An upload found an entry damaged on disk: read its lines again soon."""
        self.plan.extend(refill.plan([damaged], self.ctx.known, [], self.shipped))
        self.ctx.wake.set()

    async def refill_damaged(self) -> None:
        """Read again the lines of damaged spool entries, then set the entries aside.

        The ranges of one entry are sealed as one new entry before the damaged one
        is moved, so a crash in between finds the new entry and reads nothing twice.
        A local error (disk full, too many open files) leaves the entry in place,
        tried again later.
        """
        plan, self.plan = self.plan, refill.Plan([], [], [])
        assert self.submit_upload is not None
        holes: dict[Path, list[refill.Hole]] = defaultdict(list)
        for hole in plan.holes:
            holes[hole.damaged.path].append(hole)
        for damaged, why in plan.settled:
            log.warning(
                "damaged spool entry: nothing to read again for a range of it",
                extra={"path": str(damaged.path), "reason": damaged.reason, "because": why},
            )
        for damaged, why in plan.lost:
            self.report_lost(damaged, why)
        for group in holes.values():
            await self.refill_entry(group)
        # Set aside once nothing of them is left to read again.
        for damaged, _ in plan.settled + plan.lost:
            if damaged.path not in holes:
                await asyncio.to_thread(self.spool.set_aside, damaged)

    async def refill_entry(self, holes: list[refill.Hole]) -> None:
        """Read one damaged entry's ranges again into one new entry, then set it aside."""
        assert self.submit_upload is not None
        damaged = holes[0].damaged
        places = await self.lost.places([])
        batches: list[tuple[Batch, Marker | None]] = []
        for hole in holes:
            try:
                batches.append(await asyncio.to_thread(self.refill_batch, hole, places))
            except refill.RefillError as exc:
                self.report_lost(damaged, str(exc), hole=hole)
            except OSError as exc:
                self.plan.holes.extend(holes)
                self.retry_at = time.monotonic() + REFILL_RETRY_SECS
                self.ctx.warnings.warn(
                    "reading a damaged spool entry's lines again failed; will retry",
                    path=str(damaged.path),
                    error=str(exc),
                )
                return
        if batches:
            # The damaged entry's own key and codec, when its header says: if it had
            # in fact been stored, the store's 412 still makes this a no-op.
            entry = await asyncio.to_thread(
                self.sealer.seal_batches, batches, key=damaged.key, codec=damaged.codec
            )
            self.ctx.counters["spool_refilled"] += 1
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
            self.submit_upload(entry)
        await asyncio.to_thread(self.spool.set_aside, damaged)

    def report_lost(
        self, damaged: DamagedEntry, why: str, *, hole: refill.Hole | None = None
    ) -> None:
        """An ERROR naming the lost range: ``hole``'s, else the entry's (first) one."""
        self.ctx.counters["spool_lost"] += 1
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

    def refill_batch(self, hole: refill.Hole, places: set[Path]) -> tuple[Batch, Marker | None]:
        """Runs in a thread: read the range again, through the chain, into one batch."""
        source = self.ctx.settings.sources.get(hole.source)
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
            active = self.opener.active_for(tailer, (hole.fingerprint.dev, hole.fingerprint.ino))
            # One batch for the whole range, as when it was first sealed.
            active.batcher.limits = replace(self.ctx.limits, max_bytes=2**62, max_records=2**62)
            for chunk in refill.read_hole(hole, tailer):
                self.sealer.process(active, active.lines_of(chunk), stream=stream)
            held = None if active.joiner is None else active.joiner.flush(time.time())
            if held is not None:
                self.sealer.process(active, held, stream=stream)
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
