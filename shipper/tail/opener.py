"""Opening files for reading: where each starts, its tailer, batcher and line joiner."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from shipper.batch.batcher import Batcher
from shipper.files.confined import open_log_file
from shipper.files.durable import InodeKey, printable_path
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import CompressedFileTailer
from shipper.tail.context import TailContext
from shipper.tail.decompress import DecompressedStream
from shipper.tail.files import ActiveFile, Preopened
from shipper.tail.globs import source_of
from shipper.tail.identify import ByHead, Identified, end_of_last_line, identify_open
from shipper.tail.multiline import LineJoiner, start_rule
from shipper.tail.tailer import FileTailer

log = logging.getLogger(__name__)


class Opener:
    """Turns a file a scan (or a creation event) found into an ``ActiveFile``."""

    def __init__(self, ctx: TailContext, persist: Callable[[], Awaitable[None]]) -> None:
        self.ctx = ctx
        #: Saves the checkpoints durably: never-seen files are known before they are read.
        self.persist = persist

    def open(
        self, source: str, path: str, inode: InodeKey, found: Identified, *, initial: bool
    ) -> ActiveFile:
        settings = self.ctx.settings.sources[source]
        copy_of = None
        if found.known is not None:
            offset = found.known.offset
            if found.known.source in self.ctx.settings.sources:
                source = found.known.source
                settings = self.ctx.settings.sources[source]
            found.known.seen_at = time.time()
            found.known.finished = False  # found again where it may still grow
        elif found.copy_of is not None:
            original = found.copy_of
            copy_of = original.fingerprint.id
            # A second copy of the same file holds nothing the first did not.
            continued = copy_of in self.ctx.files.copies.continued or any(
                c.copy_of == copy_of for c in self.ctx.known.values()
            )
            self.ctx.files.copies.continued.add(copy_of)
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
        elif (
            initial
            and settings.read_from == "end"
            and not self.ctx.had_state
            and not self.ctx.one_shot
        ):
            # Only on a first start. A file new at a later start appeared while we were
            # down (a rotation, most likely): all of it is unread.
            offset = end_of_last_line(found.fd, found.size)
        else:
            # A file that appears while running is read whole: it is usually the new
            # file of a rotation, and its first lines are as precious as any.
            offset = 0
        shown = printable_path(path)
        if found.known is not None and found.known.path == shown:
            shown = found.known.path  # one string for both: 100 bytes per known file
        tailer = FileTailer(
            source=source,
            path=shown,
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
        return self.active_for(tailer, inode, copy_of=copy_of)

    def open_compressed(
        self, stream: DecompressedStream, checkpoint: Checkpoint
    ) -> ActiveFile | None:
        try:
            st = os.fstat(stream.fileno())
        except OSError:
            stream.close()
            return None
        inode = (st.st_dev, st.st_ino)
        if inode in self.ctx.files.active:
            stream.close()
            return None
        settings = self.ctx.settings.sources[checkpoint.source]
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
        return self.active_for(tailer, inode)

    def active_for(
        self, tailer: FileTailer, inode: InodeKey, *, copy_of: str | None = None
    ) -> ActiveFile:
        """A tailer with its batcher and, where the source asks for one, its line joiner."""
        if inode == tailer.fingerprint.inode:
            inode = tailer.fingerprint.inode  # the file tables' key: one tuple per file
        settings = self.ctx.settings.sources[tailer.source]
        batcher = Batcher(
            self.ctx.limits,
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
        if self.ctx.one_shot:
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

    async def start_tailing(self, opened: list[ActiveFile]) -> None:
        """Checkpoint never-seen files where they start, durably, before reading them.

        Otherwise a crash before their first batch is sealed would leave no trace of
        them, and the next start could apply ``read_from = "end"`` to lines never read.
        """
        opened = self.not_yet_tailed(opened)
        new = [a for a in opened if a.tailer.fingerprint.id not in self.ctx.known]
        for active in new:
            tailer = active.tailer
            self.ctx.known[tailer.fingerprint.id] = Checkpoint(
                tailer.fingerprint,
                tailer.source,
                tailer.path,
                tailer.offset,
                copy_of=active.copy_of,
            )
        if new:
            await self.persist()
        fresh = {id(a) for a in new}
        for active in opened:
            if self.ctx.stopping.is_set():
                active.tailer.close()
                continue
            self.ctx.files.active[active.inode] = active
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
        self.ctx.wake.set()

    def not_yet_tailed(self, opened: list[ActiveFile]) -> list[ActiveFile]:
        """``opened`` less the files tailed already (each closed again).

        An inode that is open cannot be reused, so an inode already in the table is
        the same file, found a second way: a file created during a scan is opened by
        that scan and also pre-opened by its creation event, and the next scan takes
        the pre-opened handle. A second reader of one file would ship its lines twice.
        """
        kept: list[ActiveFile] = []
        taken: set[InodeKey] = set()
        for active in opened:
            if active.inode in self.ctx.files.active or active.inode in taken:
                log.debug(
                    "already tailing file; second handle closed",
                    extra={"path": active.tailer.path, "fingerprint": active.tailer.fingerprint.id},
                )
                active.tailer.close()
                continue
            taken.add(active.inode)
            kept.append(active)
        return kept

    def preopen(self, path: str) -> None:
        """Open a just-created file that a source selects; the next scan identifies it."""
        source = source_of(self.ctx.settings.sources, path)
        if source is None or self.ctx.files.free_slots(self.ctx.settings.max_open_files) <= 0:
            return
        roots = self.ctx.events.roots.get(source)
        if roots is None:
            return  # before the first scan, which finds the file
        try:
            # On the event loop: never a blocking open (a FIFO), never out of the roots.
            fd = open_log_file(path, roots=roots.allowed)
            st = os.fstat(fd)
        except OSError:
            return  # gone already, or not a file we can read: the scan will say
        inode = (st.st_dev, st.st_ino)
        if (
            inode in self.ctx.files.active
            or inode in self.ctx.files.preopened
            or not stat.S_ISREG(st.st_mode)
        ):
            os.close(fd)
            return
        self.ctx.files.preopened[inode] = Preopened(source, path, fd)

    def take_preopened(
        self, by_inode: Mapping[InodeKey, Sequence[Checkpoint]], by_head: ByHead
    ) -> dict[InodeKey, tuple[str, str, Identified]]:
        """Identify the pre-opened files that have a complete first line by now."""
        ready: dict[InodeKey, tuple[str, str, Identified]] = {}
        for inode, held in list(self.ctx.files.preopened.items()):
            source, path, fd = held.source, held.path, held.fd
            try:
                found = identify_open(
                    fd,
                    fingerprint_bytes=self.ctx.settings.sources[source].fingerprint_bytes,
                    candidates=by_inode,
                    by_head=by_head,
                )
                empty_and_gone = found is None and os.fstat(fd).st_nlink == 0
            except OSError:
                found, empty_and_gone = None, True
            if found is not None:
                ready[inode] = (source, path, found)
            if found is not None or empty_and_gone:
                del self.ctx.files.preopened[inode]
            if found is None and empty_and_gone:
                os.close(fd)
        return ready
