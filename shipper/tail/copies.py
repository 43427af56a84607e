"""Copies made by copytruncate: paired with their original, held back until it is read."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Container

from shipper.files.durable import InodeKey, printable_path
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.context import TailContext
from shipper.tail.identify import Identified, copies_found_together, still_a_copy

log = logging.getLogger(__name__)

#: Longest a file that looks like a copy still being written is held back without
#: growing. A copy being written grows until it reaches its original's markers.
COPY_HOLD_SECS = 30.0


class CopyTracker:
    """Decides, scan by scan, which files are copies of others and when they are read."""

    def __init__(self, ctx: TailContext) -> None:
        self.ctx = ctx

    def pair_copies(
        self,
        results: list[tuple[str, str, InodeKey, Identified | None]],
        early: dict[InodeKey, tuple[str, str, Identified]],
    ) -> set[str]:
        """Runs in a thread: make copies found beside their never-seen original wait.

        A copy paired by an earlier scan stays the original's copy while it still
        holds the original's bytes (or they cannot be compared: the original was
        truncated since), so it is held back until the original is read, then
        continued where that one was read up to. Returns the ids of originals
        found in this scan, which count as alive.
        """
        found = [(s, p, i) for s, p, _, i in results if i is not None]
        found += list(early.values())
        self.keep_paired([i for _, _, i in found])
        by_identity = {id(i): (s, p) for s, p, i in found}
        originals: set[str] = set()
        try:
            pairs = copies_found_together([i for _, _, i in found])
        except OSError:
            return originals  # looked at again by the next scan
        for copy, original in pairs:
            source, path = by_identity[id(original)]
            fp = original.fingerprint
            copy.copy_of = Checkpoint(fp, source, printable_path(path), 0)
            copy.copy_in_progress = False
            self.ctx.files.copies.paired[(copy.fingerprint.dev, copy.fingerprint.ino)] = fp.id
            originals.add(fp.id)
            log.info(
                "found a file and its copy (copytruncate under way?): reading the file,"
                " then the copy from where the file was read up to",
                extra={"path": printable_path(by_identity[id(copy)][1]), "copy_of": path},
            )
        return originals

    def keep_paired(self, found: list[Identified]) -> None:
        """Copies paired by an earlier scan stay copies while they hold their original's bytes."""
        for identified in found:
            fp = identified.fingerprint
            original_id = self.ctx.files.copies.paired.get((fp.dev, fp.ino))
            if original_id is None or identified.known is not None:
                continue
            original = self.ctx.known.get(original_id)
            pread = functools.partial(os.pread, identified.fd)
            if (
                original is None
                or original.fingerprint.head_sha256 != fp.head_sha256
                or still_a_copy(original, pread, identified.size) is False
            ):
                del self.ctx.files.copies.paired[(fp.dev, fp.ino)]  # a file of its own after all
                identified.copy_of = None
                identified.copy_in_progress = False
            else:
                identified.copy_of = original
                identified.copy_in_progress = False

    def held_back(self, identified: Identified, alive: Container[str]) -> bool:
        """Hold back a copy of a file that is still being read (closing it); True if so.

        copytruncate copies first and truncates after: until the original is read to
        its truncation, where the copy should continue is not known yet. A scan after
        the original is finished (or gone) continues the copy. A file that only looked
        like a copy being written (the same bytes so far) and whose original is done
        is a file of its own: read whole rather than risk losing it.
        """
        original = identified.copy_of
        if original is None:
            return False
        fp = identified.fingerprint
        inode = (fp.dev, fp.ino)
        now = time.monotonic()
        since, size = self.ctx.files.copies.held_since.get(inode, (now, -1))
        if size != identified.size:
            since = now  # still being written: the clock starts again
        self.ctx.files.copies.held_since[inode] = (since, identified.size)
        if identified.copy_in_progress and now - since > COPY_HOLD_SECS:
            # Not growing, and still the same bytes as its original: not a copy being
            # written but a file of its own with the same content so far.
            alive = ()
        if original.fingerprint.id in alive:
            os.close(identified.fd)
            return True
        del self.ctx.files.copies.held_since[inode]
        self.ctx.files.copies.paired.pop(inode, None)
        if identified.copy_in_progress:
            identified.copy_of = None
            identified.copy_in_progress = False
        return False
