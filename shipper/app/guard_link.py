"""What the disk guard may ask of the running daemon (``GuardHooks``): a snapshot of the
files, a pause of the reader, letting go of a file, and spooling a gap record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from shipper.batch.objectkey import KeyTemplate
from shipper.files.durable import InodeKey
from shipper.housekeeping.disk_guard import GuardSnapshot
from shipper.housekeeping.gaps import encode_gap
from shipper.housekeeping.loss import Loss
from shipper.housekeeping.retention import RotatedFile
from shipper.spool.entry import SpoolEntry
from shipper.spool.spool import Spool
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.context import TailContext


class GuardLink:
    """The narrow way from the disk guard to the reader, the spool and the uploads."""

    def __init__(self, ctx: TailContext, *, spool: Spool, keys: KeyTemplate, host: str) -> None:
        self.ctx = ctx
        self.spool = spool
        self.keys = keys
        self.host = host
        #: Queues a sealed entry for upload; set once the uploader runs.
        self.submit_upload: Callable[[SpoolEntry], None] | None = None

    def guard_snapshot(self) -> GuardSnapshot:
        live: set[InodeKey] = set(self.ctx.files.preopened) | self.ctx.files.waiting.inodes()
        open_files: dict[InodeKey, tuple[Checkpoint, bool]] = {}
        for inode, active in self.ctx.files.active.items():
            checkpoint = self.ctx.known.get(active.tailer.fingerprint.id)
            if checkpoint is None:
                live.add(inode)  # not checkpointed yet: too new to judge
            else:
                open_files[inode] = (replace(checkpoint), active.tailer.finish_at_eof)
        known = {fid: replace(c) for fid, c in self.ctx.known.items()}
        return GuardSnapshot(known=known, live=live, open_files=open_files)

    @contextlib.asynccontextmanager
    async def reader_paused(self) -> AsyncIterator[None]:
        async with self.ctx.scanning, self.ctx.reading:
            yield

    def release_file(self, inode: InodeKey, fid: str | None) -> None:
        """Let go of a file being deleted: unsealed lines in it are in the gap record."""
        active = self.ctx.files.active.pop(inode, None)
        if active is not None:
            active.tailer.close()
            fid = fid or active.tailer.fingerprint.id
        self.ctx.files.parked.pop(inode, None)
        checkpoint = self.ctx.known.get(fid) if fid is not None else None
        if checkpoint is not None and not checkpoint.finished:
            checkpoint.finished = True
            self.ctx.checkpoints_dirty = True

    def seal_gap(self, file: RotatedFile, loss: Loss, reason: str) -> SpoolEntry:
        """Spool the record of lines deleted unshipped, as an object beside the batches."""
        sink = self.ctx.settings.sink
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
        assert self.submit_upload is not None
        self.submit_upload(entry)

    def still_present(self, fids: set[str]) -> None:
        """Found by the disk guard (a rotation it judged, compressed or not): seen now,
        so its checkpoint and delivered ranges are not forgotten while it is there."""
        now = time.time()
        for fid in fids:
            checkpoint = self.ctx.known.get(fid)
            if checkpoint is not None:
                checkpoint.seen_at = now
