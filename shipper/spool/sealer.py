"""Sealing: a file's cut batches, in order, packed and durably spooled; checkpoints
follow only what is sealed.

Stopping at the first failure keeps the sealed ranges of a file a prefix of it: a
later batch is never durable while an earlier one is not, so a crash cannot leave
a hole.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from shipper.batch.batcher import Batch, BatchLimits
from shipper.batch.objectkey import KeyTemplate
from shipper.batch.pack import pack_batches
from shipper.batch.provenance import SEGMENTS_METADATA_BYTES
from shipper.config import DEFAULT_COMPRESSION_LEVEL
from shipper.files.markers import Marker, remember
from shipper.spool import refill
from shipper.spool.entry import SpoolEntry
from shipper.spool.spool import Spool
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.context import TailContext
from shipper.tail.files import ActiveFile
from shipper.tail.seams import Sealed, warn_failed
from shipper.tail.tailer import LineChunk
from shipper.transform.chain import Chain

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SealResult:
    entries: list[SpoolEntry] = field(default_factory=list)
    #: Markers of the sealed ends, by fingerprint id, for the checkpoints.
    markers: list[tuple[str, Marker]] = field(default_factory=list)
    error: OSError | None = None


def _segment_text_len(batch: Batch) -> int:
    """Bytes ``batch`` adds to an object's ``shipper-segments`` metadata (and a ``;``)."""
    return len(f"{batch.fingerprint.id}:{batch.start}-{batch.end}:{batch.lines};")


def _packs(
    actives: list[ActiveFile], limits: BatchLimits, *, described_at_most: int | None
) -> Iterator[list[ActiveFile]]:
    """The files, in order, in groups whose one owed batch each fit one entry, and
    whose ranges fit ``described_at_most`` bytes of metadata if given."""
    pack: list[ActiveFile] = []
    size = records = described = 0
    for active in actives:
        batch = active.unsealed[0]
        text = _segment_text_len(batch)
        if pack and (
            size + len(batch.body) > limits.max_bytes
            or records + batch.records > limits.max_records
            or (described_at_most is not None and described + text > described_at_most)
        ):
            yield pack
            pack, size, records, described = [], 0, 0, 0
        pack.append(active)
        size += len(batch.body)
        records += batch.records
        described += text
    if pack:
        yield pack


def _own(sealed: Sealed) -> SealResult:
    """A seal step's outcome, handed back by the reader: always one of ours."""
    assert isinstance(sealed, SealResult)
    return sealed


class Sealer:
    """The reader's consumer: chain -> batcher -> spool, and the checkpoints after."""

    def __init__(self, ctx: TailContext, *, spool: Spool, keys: KeyTemplate, chain: Chain) -> None:
        self.ctx = ctx
        self.spool = spool
        self.keys = keys
        self.chain = chain
        #: Queues a sealed entry for upload; set once the uploader runs.
        self.submit_upload: Callable[[SpoolEntry], None] | None = None

    def process(self, active: ActiveFile, chunk: LineChunk, *, stream: str | None = None) -> None:
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

    def resume_key_block(self, active: ActiveFile) -> None:
        """Runs in a thread: start the file's stream inside a private key block if the
        bytes before where it is read from open one (the redactor follows blocks line
        by line, and knows nothing of lines read before a restart)."""
        active.check_key_block = False
        redactor = self.chain.redactor
        tailer = active.tailer
        if redactor is not None and refill.inside_key_block(tailer, tailer.offset):
            redactor.enter_key_block(tailer.fingerprint.id)

    def seal_owed(self, active: ActiveFile, *, beyond_limits: bool = False) -> SealResult:
        """Seal a file's cut batches in order; stop when the spool is full or a write fails.

        Stopping keeps the sealed ranges of a file a prefix of it: a later batch is
        never durable while an earlier one is not, so a crash cannot leave a hole.
        What waits here is at most one read chunk's worth of batches per file.
        """
        result = SealResult()
        while active.unsealed:
            if self.spool_full() and not beyond_limits:
                break
            batch = active.unsealed[0]
            try:
                marker = active.tailer.marker_at(batch.end)
            except OSError:
                marker = None  # the file is unreadable now; the older markers still hold
            try:
                entry = self.seal(batch, end_marker=marker)
            except OSError as exc:
                result.error = exc
                break
            del active.unsealed[0]
            result.entries.append(entry)
            if marker is not None:
                result.markers.append((batch.fingerprint.id, marker))
        return result

    def settle(self, active: ActiveFile, sealed: Sequence[Sealed]) -> None:
        """Back on the event loop: accept what was sealed, report what failed."""
        results = [_own(s) for s in sealed]
        self.accept([entry for result in results for entry in result.entries])
        for result in results:
            for fid, marker in result.markers:
                checkpoint = self.ctx.known.get(fid)
                if checkpoint is not None:
                    checkpoint.markers = remember(checkpoint.markers, marker)
        error = next((r.error for r in results if r.error is not None), None)
        if error is not None:
            warn_failed(self.ctx, active, error)

    def seal(self, batch: Batch, *, end_marker: Marker | None) -> SpoolEntry:
        """Encode, compress and durably spool one batch. Runs in a thread."""
        return self.seal_batches([(batch, end_marker)])

    def seal_batches(
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
        sink = self.ctx.settings.sink
        if codec is None or codec == sink.codec:
            codec, level = sink.codec, sink.compression_level
        else:
            level = DEFAULT_COMPRESSION_LEVEL[codec]
        encoded = pack_batches(batches, keys=self.keys, codec=codec, compression_level=level)
        if key is not None:
            encoded = replace(encoded, key=key)
        return self.spool.seal(encoded)

    def accept(self, entries: list[SpoolEntry]) -> None:
        """Entries are durable: advance their files' checkpoints and queue the uploads."""
        assert self.submit_upload is not None
        for entry in entries:
            for segment in entry.segments:
                fid = segment.fingerprint.id
                checkpoint = self.ctx.known.get(fid)
                if checkpoint is None:
                    self.ctx.known[fid] = Checkpoint(
                        segment.fingerprint, entry.source, segment.path, segment.end
                    )
                else:
                    checkpoint.offset = max(checkpoint.offset, segment.end)
                    checkpoint.path = segment.path
                    checkpoint.seen_at = time.time()
            self.ctx.checkpoints_dirty = True
            self.submit_upload(entry)

    async def flush_together(
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
                await self.flush(active, beyond_limits=beyond_limits)
        if packable:
            result = await asyncio.to_thread(
                functools.partial(self.seal_packed, packable, beyond_limits=beyond_limits)
            )
            self.settle(packable[0], [result])
        return [a for a in actives if not a.unsealed]

    def seal_packed(self, actives: list[ActiveFile], *, beyond_limits: bool = False) -> SealResult:
        """Runs in a thread: seal the one batch each file owes, packing those of one
        source and key partition into entries within the batch limits (and, for
        gzip objects, :data:`SEGMENTS_METADATA_BYTES` of metadata).

        Each file's batch is its only unsealed one, so the order of its batches
        holds whatever is packed beside it. Stops like :meth:`_seal_unsealed`.
        """
        result = SealResult()
        # One object holds one source's lines of one key partition (the hour, say).
        by_partition: dict[str, list[ActiveFile]] = defaultdict(list)
        for active in actives:
            batch = active.unsealed[0]
            partition = self.keys.partition(source=batch.source, first_time=batch.first_time)
            by_partition[partition].append(active)
        # A zstd object lists its files in the span list it ends with; a gzip one in
        # its metadata only, and S3 allows 2 KB of that.
        gzip = self.ctx.settings.sink.codec == "gzip"
        described_at_most = SEGMENTS_METADATA_BYTES if gzip else None
        for members in by_partition.values():
            for pack in _packs(members, self.ctx.limits, described_at_most=described_at_most):
                if self.spool_full() and not beyond_limits:
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
                    entry = self.seal_batches(batches)
                except OSError as exc:
                    result.error = exc
                    return result
                result.entries.append(entry)
                for active, (batch, marker) in zip(pack, batches, strict=True):
                    del active.unsealed[0]
                    if marker is not None:
                        result.markers.append((batch.fingerprint.id, marker))
        return result

    async def flush(self, active: ActiveFile, *, beyond_limits: bool = False) -> bool:
        """Cut and seal the open batch however small; True once nothing is left unsealed."""
        batch = active.batcher.flush()
        if batch is not None:
            active.unsealed.append(batch)
        if active.unsealed:
            result = await asyncio.to_thread(
                functools.partial(self.seal_owed, active, beyond_limits=beyond_limits)
            )
            self.settle(active, [result])
        return not active.unsealed

    def spool_full(self) -> bool:
        limits = self.ctx.settings.spool
        return (
            self.spool.used_bytes >= limits.max_bytes
            or self.spool.entry_count >= limits.max_entries
        )

    async def wait_for_spool_space(self) -> bool:
        """Backpressure: while the spool is full, read nothing. False if a stop came first."""
        warned = False
        while True:
            # Cleared before the check, so a delivery between the two is not missed.
            self.ctx.space_freed.clear()
            if not self.spool_full():
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
            stop = asyncio.create_task(self.ctx.stopping.wait())
            freed = asyncio.create_task(self.ctx.space_freed.wait())
            await asyncio.wait({stop, freed}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            freed.cancel()
            if self.ctx.stopping.is_set():
                return False
