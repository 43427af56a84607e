"""Files the reader lost track of: renamed out of the globs, truncated, or compressed away."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from shipper.files.durable import InodeKey, printable_path
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import find_compressed
from shipper.tail.context import TailContext
from shipper.tail.decompress import Refusal
from shipper.tail.files import ActiveFile
from shipper.tail.globs import find_by_inode, real_parents, watch_roots
from shipper.tail.identify import Identified, find_copies, identify
from shipper.tail.opener import Opener

log = logging.getLogger(__name__)


class LostFiles:
    """Finds where a file with unread lines went, and opens it there to finish it."""

    def __init__(self, ctx: TailContext, opener: Opener) -> None:
        self.ctx = ctx
        self.opener = opener

    async def reopen_rotated(
        self,
        missing: set[InodeKey],
        by_inode: Mapping[InodeKey, Sequence[Checkpoint]],
        found: list[str],
        *,
        keep_read: bool,
    ) -> tuple[list[ActiveFile], list[Checkpoint]]:
        """Find files with unread lines that were renamed out of the globs unobserved.

        A rotation while the daemon was down, or while a file was parked, moves a
        half-read file to a name the globs may not match (``app.log.1``). It is looked
        for by device and inode in the directories the sources watch and where known
        files last were, checked by its first line, and read to its end first.
        Returns those reopened, and the unfinished files not found by inode.
        """
        if not missing:
            return [], []
        places = await self.places(found)
        candidates = await asyncio.to_thread(find_by_inode, sorted(places), missing)
        reopened: list[ActiveFile] = []
        located: set[str] = set()
        for path, inode in candidates:
            try:
                # Only known files are wanted here; the head length of a new file is moot.
                identified = await asyncio.to_thread(
                    identify, path, fingerprint_bytes=256, candidates=by_inode
                )
            except OSError as exc:
                # Found but not opened (out of descriptors, say): tried again next time,
                # never taken for gone.
                self.ctx.warnings.warn("cannot open rotated file", path=path, error=str(exc))
                located.update(c.fingerprint.id for c in by_inode.get(inode, ()))
                continue
            if identified is None:
                continue
            known = identified.known
            if known is not None:
                located.add(known.fingerprint.id)
            # At start, a fully read file needs nothing. A parked one renamed away may
            # still get lines from a writer that has not reopened yet: follow it.
            if known is None or (identified.size <= known.offset and not keep_read):
                os.close(identified.fd)  # another file now, or nothing left to read
                continue
            if known.source not in self.ctx.settings.sources:
                os.close(identified.fd)  # its source was removed from the config
                continue
            active = self.opener.open(known.source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            log.info(
                "found a rotated file with unread lines; finishing it first",
                extra={"path": active.tailer.path, "offset": known.offset},
            )
            reopened.append(active)
        unfound = [
            c
            for inode in missing
            for c in by_inode.get(inode, ())
            if not c.finished and c.fingerprint.id not in located
        ]
        return reopened, unfound

    async def places(self, found: list[str]) -> set[Path]:
        """Where rotated files may be: the watched directories and where known files were."""
        places = {Path(c.path).parent for c in self.ctx.known.values()}
        places.update(watch_roots(self.ctx.settings.sources))
        # Through symlinks too (Kubernetes' /var/log/containers): the kubelet renames
        # the target, in the target's directory.
        places.update(await asyncio.to_thread(real_parents, found))
        return places

    async def finish_elsewhere(
        self,
        lost_track: list[Checkpoint],
        identified_now: list[Identified | None],
        skip: set[InodeKey],
        found: list[str],
    ) -> list[ActiveFile]:
        """Finish files whose inode no longer holds them, from a copy, else compressed.

        A file truncated by copytruncate, or gone while we were away or it was
        parked, may have lines we never read in a copy the globs do not match
        (``app.log.1``) or in a compressed rotation (``app.log.1.gz``). Files
        truncated while being read are looked for too, unless a copy the globs
        match was found (it is continued by the scan itself).

        A file is marked finished (never looked for again) only once that is
        durable: nothing was found, or a saved checkpoint continues it. One
        continued by what this search opens stays unfinished until that is read
        (a compressed copy) or saved (a copy), so a crash meanwhile looks again.
        """
        lost_track = lost_track + self.ctx.files.truncated_originals
        self.ctx.files.truncated_originals = []
        saved = {c.copy_of for c in self.ctx.known.values() if c.copy_of is not None}
        continued = saved | {i.copy_of.fingerprint.id for i in identified_now if i and i.copy_of}
        wanted = {
            c.fingerprint.id: c
            for c in lost_track
            if c.fingerprint.id not in continued and c.source in self.ctx.settings.sources
        }
        for checkpoint in lost_track:
            fid = checkpoint.fingerprint.id
            if fid in saved or (fid not in continued and fid not in wanted):
                checkpoint.finished = True
                self.ctx.checkpoints_dirty = True
        if not wanted:
            return []
        places = sorted(await self.places(found))
        skip = skip | set(self.ctx.files.active)
        copies = await asyncio.to_thread(find_copies, places, list(wanted.values()), skip)
        opened: list[ActiveFile] = []
        for path, identified in copies:
            original = identified.copy_of
            assert original is not None
            del wanted[original.fingerprint.id]
            inode = (identified.fingerprint.dev, identified.fingerprint.ino)
            active = self.opener.open(original.source, path, inode, identified, initial=False)
            active.tailer.finish_at_eof = True
            opened.append(active)
        if wanted:
            refused: list[tuple[str, Refusal]] = []
            streams = await asyncio.to_thread(
                find_compressed, places, list(wanted.values()), refused
            )
            for path, refusal in refused:
                self.ctx.refused.report(printable_path(path), refusal)
            for stream, checkpoint in streams:
                compressed = self.opener.open_compressed(stream, checkpoint)
                if compressed is not None:
                    del wanted[checkpoint.fingerprint.id]
                    opened.append(compressed)
        for checkpoint in wanted.values():  # nowhere to be found: nothing more will come
            checkpoint.finished = True
            self.ctx.checkpoints_dirty = True
        return opened
