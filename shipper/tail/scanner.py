"""A scan: every file the sources select (or some paths alone), identified and opened."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import replace

from shipper.files.durable import InodeKey, printable_path
from shipper.tail import backfill_files
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.context import TailContext
from shipper.tail.copies import CopyTracker
from shipper.tail.files import ActiveFile, Parked
from shipper.tail.globs import discover, roots_of, selected
from shipper.tail.identify import ByHead, Identified, end_of_last_line, identify
from shipper.tail.lost import LostFiles
from shipper.tail.opener import Opener

log = logging.getLogger(__name__)

#: Backfill: compressed files read at once (each holds a decompressor's window).
BACKFILL_STREAMS = 16


def _read_through(identified: Identified) -> bool:
    """A known file a backfill already read to its end (in this run or an earlier one)."""
    known = identified.known
    return (
        known is not None
        and not identified.rewritten
        and _read_through_at([known], identified.size)
    )


def _read_through_at(candidates: Iterable[Checkpoint], size: int) -> bool:
    """The same, judged from the inode's checkpoints and size alone (nothing opened)."""
    return any(c.finished and size <= c.offset for c in candidates)


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


class Scanner:
    """Finds files, tells known from new, and opens what has lines to read."""

    def __init__(
        self, ctx: TailContext, opener: Opener, copies: CopyTracker, lost: LostFiles
    ) -> None:
        self.ctx = ctx
        self.opener = opener
        self.copies = copies
        self.lost = lost

    async def scan(self, *, initial: bool, targeted: list[tuple[str, str]] | None = None) -> None:
        """Look at every file the sources select, or (``targeted``) at those paths alone.

        A targeted scan opens what it finds there that has lines to read; it takes
        nothing for gone, renamed or rotated: only a scan of everything can tell.
        """
        async with self.ctx.scanning:
            if targeted is None or not self.ctx.events.roots:
                # Resolved once a scan (an operator may move a symlinked base).
                self.ctx.events.roots = await asyncio.to_thread(roots_of, self.ctx.settings.sources)
            if targeted is None:
                await self.scan_now(initial=initial)
            else:
                await self.scan_now(initial=initial, targeted=targeted)

    async def scan_now(
        self, *, initial: bool, targeted: list[tuple[str, str]] | None = None
    ) -> None:
        if targeted is None:
            found = await asyncio.to_thread(
                discover, self.ctx.settings.sources, refusals=self.ctx.refusals
            )
        else:
            found = await asyncio.to_thread(selected, targeted, self.ctx.events.roots)
        by_inode, by_head = self.ctx.known.index()
        self.ctx.files.copies.continued = set()
        early = {} if targeted is not None else self.opener.take_preopened(by_inode, by_head)
        # Known files waiting for a slot are followed like parked ones if rotated away.
        was_waiting = self.ctx.files.waiting.inodes() if targeted is None else set()
        results = await asyncio.to_thread(
            self.identify_all,
            found,
            by_inode,
            by_head,
            set(early) | set(self.ctx.files.preopened),
            initial,
            targeted=targeted is not None,
        )
        paths = [path for _, path in found]
        del found  # the results hold what is needed of it: 6 MiB less per 100,000 files
        identified_now = [r[3] for r in results] + [e[2] for e in early.values()]
        originals = await asyncio.to_thread(self.copies.pair_copies, results, early)
        self.learn_waiting()
        self.unpark_replaced(results)
        alive = self.alive_ids(identified_now, originals)
        seen, opened = self.open_found(results, early, alive, initial=initial)
        if targeted is not None:
            replaced = self.replaced(results, by_inode, alive)
            if replaced or self.ctx.files.truncated_originals:
                opened += await self.lost.finish_elsewhere(replaced, identified_now, seen, paths)
            await self.opener.start_tailing(opened)
            return
        # Files we were reading (at start: all known ones; later: parked ones) that the
        # globs no longer match may have been rotated with lines still unread.
        gone = (
            set(by_inode)
            if initial
            else set(self.ctx.files.parked) | {i for i in was_waiting if i in by_inode}
        )
        reopened, unfound = await self.lost.reopen_rotated(
            gone - seen, by_inode, paths, keep_read=not initial
        )
        opened += reopened
        lost_track = unfound + self.replaced(results, by_inode, alive)
        opened += await self.lost.finish_elsewhere(lost_track, identified_now, seen, paths)
        for inode in set(self.ctx.files.parked) - seen:
            del self.ctx.files.parked[inode]
        self.ctx.files.copies.forget_unseen(seen)
        if self.ctx.one_shot:
            opened += await self.compressed_for_backfill(already=len(opened))
        await self.opener.start_tailing(opened)
        self.mark_seen(seen)

    def open_found(
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
            active = self.ctx.files.active.get(inode)
            if active is not None:
                shown = printable_path(path)
                if active.tailer.path != shown:
                    log.info("file renamed", extra={"from": active.tailer.path, "to": shown})
                    active.tailer.path = active.batcher.path = shown
                active.tailer.finish_at_eof = self.ctx.one_shot
            elif self.ctx.one_shot and identified is not None and _read_through(identified):
                os.close(identified.fd)  # a backfill reads each file once
            elif identified is not None and not self.copies.held_back(identified, alive):
                self.ctx.files.parked.pop(inode, None)
                opened.append(self.opener.open(source, path, inode, identified, initial=initial))
        for inode, (source, path, identified) in early.items():
            if inode in self.ctx.files.active:
                # Created while the scan before this one opened it: its creation event
                # pre-opened it a second time.
                os.close(identified.fd)
                continue
            if self.copies.held_back(identified, alive):
                continue
            # Created and rotated away (or deleted) before any scan saw it: read it
            # through the handle taken when it appeared.
            active = self.opener.open(source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            opened.append(active)
        return seen, opened

    def mark_seen(self, seen: set[InodeKey]) -> None:
        """After a scan of everything: what it found is alive; a tailed file it did not
        find was rotated away."""
        now = time.time()
        for parked in self.ctx.files.parked.values():
            parked.checkpoint.seen_at = now
        for inode, active in self.ctx.files.active.items():
            tailed = self.ctx.known.get(active.tailer.fingerprint.id)
            if tailed is not None:
                tailed.seen_at = now
            if inode not in seen and not active.tailer.finish_at_eof:
                active.tailer.finish_at_eof = True
                log.info(
                    "file rotated away; reading it to its end", extra={"path": active.tailer.path}
                )

    def learn_waiting(self) -> None:
        """Know the new files that wait for a slot, from where they will be read."""
        for checkpoint in self.ctx.files.registered:
            if checkpoint.fingerprint.id not in self.ctx.known:
                self.ctx.known[checkpoint.fingerprint.id] = checkpoint
                self.ctx.checkpoints_dirty = True
        self.ctx.files.registered = []

    def unpark_replaced(self, results: list[tuple[str, str, InodeKey, Identified | None]]) -> None:
        """Parked files truncated or rewritten while closed (copytruncate of an idle file).

        What they held is finished, and their unread lines may be in a copy: the
        copy search of this scan looks for it.
        """
        for _, _, inode, identified in results:
            parked = self.ctx.files.parked.get(inode)
            if parked is None:
                continue
            fid = parked.checkpoint.fingerprint.id
            other = identified is not None and (
                identified.known is None or identified.known.fingerprint.id != fid
            )
            if inode in self.ctx.files.shrunk or other:
                del self.ctx.files.parked[inode]
                self.ctx.files.truncated_originals.append(parked.checkpoint)

    def alive_ids(self, identified: list[Identified | None], originals: set[str]) -> _AliveIds:
        """Fingerprint ids of the files still there to be read: tailed, parked, waiting
        for a slot, or just found (``originals``: found beside their copy)."""
        found = {i.known.fingerprint.id for i in identified if i is not None and i.known}
        return _AliveIds(found | originals, self.still_to_read)

    def still_to_read(self, fid: str) -> bool:
        """Whether the known file ``fid`` is tailed, parked or waiting for a slot."""
        checkpoint = self.ctx.known.get(fid)
        if checkpoint is None:
            return False
        fp = checkpoint.fingerprint
        inode = (fp.dev, fp.ino)
        if self.ctx.files.waiting.holds(inode):
            return True
        active = self.ctx.files.active.get(inode)
        if active is not None and active.tailer.fingerprint.id == fid:
            return True
        parked = self.ctx.files.parked.get(inode)
        return parked is not None and parked.checkpoint.fingerprint.id == fid

    def replaced(
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

    def identify_all(
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
        budget = self.ctx.settings.max_open_files - len(self.ctx.files.active)
        waiting: dict[str, tuple[str, InodeKey]] = {}
        headless: set[str] = set()  # files whose first line is not complete yet
        shrunk: set[InodeKey] = set()
        handled: set[InodeKey] = set()
        roots = self.ctx.events.roots
        resolved: dict[str, str] = {}  # directories' real paths, for this scan
        for source, path in found:
            try:
                st = os.stat(path)
                inode = (st.st_dev, st.st_ino)
                known = by_inode.get(inode, ())
                if known:
                    # The known file's own key: a scan of 100,000 files would otherwise
                    # hold as many new tuples (12 MiB) until it ends.
                    inode = known[0].fingerprint.inode
                identified = None
                parked = self.ctx.files.parked.get(inode)
                if inode in handled:
                    continue  # another name (a link) for a file this scan has seen
                handled.add(inode)
                if parked is not None and st.st_size < parked.size:
                    shrunk.add(inode)  # truncated while closed
                if inode in held or self.nothing_to_read(st, parked, known):
                    pass
                elif inode not in self.ctx.files.active and budget <= 0:
                    waiting[path] = (source, inode)  # read once another file is parked
                    if not known:
                        self.note_waiting(source, path, by_inode, resolved, initial=initial)
                elif inode not in self.ctx.files.active:
                    identified = identify(
                        path,
                        fingerprint_bytes=self.ctx.settings.sources[source].fingerprint_bytes,
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
                self.cannot_open(path, exc)
                continue
            results.append((source, path, inode, identified))
        self.ctx.files.shrunk = shrunk
        self.note_unopened(found, waiting, headless, targeted=targeted)
        return results

    def note_unopened(
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
            self.ctx.files.waiting.update(looked_at, waiting)
            self.ctx.files.unidentified = (self.ctx.files.unidentified - looked_at) | headless
        else:
            self.ctx.files.waiting.replace(waiting)
            self.ctx.files.unidentified = headless
            if waiting:
                self.ctx.warnings.warn(
                    "max_open_files reached; some files wait for a free slot",
                    waiting=len(waiting),
                    max_open_files=self.ctx.settings.max_open_files,
                )
        self.ctx.files.waiting_to_open = len(self.ctx.files.waiting)

    def nothing_to_read(
        self, st: os.stat_result, parked: Parked | None, known: Iterable[Checkpoint]
    ) -> bool:
        """Parked and unchanged, or (backfill) read to its end already: not opened."""
        if parked is not None and (parked.size, parked.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return True
        return self.ctx.one_shot and _read_through_at(known, st.st_size)

    def cannot_open(self, path: str, exc: OSError) -> None:
        self.ctx.warnings.warn("cannot open log file", path=path, error=str(exc))
        if self.ctx.one_shot:
            self.ctx.backfill.skipped[printable_path(path)] = str(exc)

    def note_waiting(
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
                fingerprint_bytes=self.ctx.settings.sources[source].fingerprint_bytes,
                candidates=by_inode,
                roots=self.ctx.events.roots[source].allowed,
                resolved=resolved,
            )
        except OSError:
            return  # read once it can be opened
        if found is None:
            return
        try:
            offset = 0
            from_end = (
                self.ctx.settings.sources[source].read_from == "end" and not self.ctx.one_shot
            )
            if initial and from_end and not self.ctx.had_state:
                offset = end_of_last_line(found.fd, found.size)  # as _open would
        except OSError:
            return
        finally:
            os.close(found.fd)
        if found.known is None and not found.rewritten and found.copy_of is None:
            self.ctx.files.registered.append(
                Checkpoint(found.fingerprint, source, printable_path(path), offset)
            )

    async def compressed_for_backfill(self, *, already: int) -> list[ActiveFile]:
        """Backfill: open the compressed files with lines left, as many as slots allow
        (``already``: files this scan opens besides)."""
        found = await asyncio.to_thread(discover, self.ctx.settings.sources, compressed=True)
        free = self.ctx.settings.max_open_files - len(self.ctx.files.active) - already
        budget = min(free, BACKFILL_STREAMS)
        skip = self.ctx.backfill.seen | set(self.ctx.files.active)
        streams, self.ctx.backfill.more = await asyncio.to_thread(
            backfill_files.find_compressed_to_read,
            found,
            {fid: replace(c) for fid, c in self.ctx.known.items()},
            skip=skip,
            skipped=self.ctx.backfill.skipped,
            fingerprint_bytes={
                n: s.fingerprint_bytes for n, s in self.ctx.settings.sources.items()
            },
            budget=max(budget, 0),
            roots={n: r.allowed for n, r in roots_of(self.ctx.settings.sources).items()},
        )
        self.ctx.backfill.seen |= skip
        opened: list[ActiveFile] = []
        for found_stream in streams:
            checkpoint = self.ctx.known.setdefault(
                found_stream.checkpoint.fingerprint.id, found_stream.checkpoint
            )
            active = self.opener.open_compressed(found_stream.stream, checkpoint)
            if active is not None:
                opened.append(active)
        return opened
