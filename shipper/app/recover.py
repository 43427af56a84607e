"""Where every known file resumes after a start: the largest of three ends.

The saved checkpoints, the complete spool entries and the delivered ranges each
know how far some files were sealed. Resuming at the largest end means no sealed
line is ever read into a *different* batch, which would get a different key and
become a duplicate; lines never sealed are read again, and no object has them.
"""

from __future__ import annotations

__all__ = ["resume_positions"]

from collections.abc import Iterable, Mapping
from dataclasses import replace

from shipper.spool.entry import SpoolEntry
from shipper.state.delivered import ShippedFile
from shipper.tail.checkpoints import Checkpoint


def resume_positions(
    checkpoints: Mapping[str, Checkpoint],
    spooled: Iterable[SpoolEntry],
    delivered: Iterable[ShippedFile],
) -> dict[str, Checkpoint]:
    """Checkpoints by fingerprint id, each at the largest end any of the three knows.

    A delivered file's fingerprint and path become its checkpoint's objects.
    """
    merged = {fid: replace(c) for fid, c in checkpoints.items()}
    # Gap records name ranges deleted unshipped, not ranges read: if the deletion
    # did not happen after all (a crash between the record and the unlink), the
    # file is read on from where it really was.
    for entry in spooled:
        if entry.kind != "batch":
            continue
        for segment in entry.segments:
            known = merged.get(segment.fingerprint.id)
            if known is None:
                merged[segment.fingerprint.id] = Checkpoint(
                    segment.fingerprint, entry.source, segment.path, segment.end
                )
            else:
                known.offset = max(known.offset, segment.end)
    for shipped in delivered:
        fid = shipped.fingerprint.id
        known = merged.get(fid)
        if known is not None:
            known.offset = max(known.offset, shipped.end)
            # Read from two tables, they are equal: one object each for both (about
            # 300 bytes per known file once 100,000 are known).
            shipped.fingerprint = known.fingerprint
            if shipped.path == known.path:
                shipped.path = known.path
            continue
        # Delivered before its checkpoint was first saved (a crash).
        merged[fid] = shipped.as_checkpoint()
    return merged
