"""Where every known file resumes after a start: the largest of three ends.

The checkpoint file, the complete spool entries and the ledger each know how
far some files were sealed. Resuming at the largest end means no sealed line
is ever read into a *different* batch, which would get a different key and
become a duplicate; lines never sealed are read again, and no object has them.
"""

from __future__ import annotations

__all__ = ["resume_positions"]

from collections.abc import Iterable, Mapping
from dataclasses import replace

from shipper.ledger import LedgerRecord
from shipper.sources.checkpoints import Checkpoint
from shipper.spool import SpoolEntry


def resume_positions(
    checkpoints: Mapping[str, Checkpoint],
    spooled: Iterable[SpoolEntry],
    delivered: Iterable[LedgerRecord],
) -> dict[str, Checkpoint]:
    """Checkpoints by fingerprint id, each at the largest end any of the three knows."""
    merged = {fid: replace(c) for fid, c in checkpoints.items()}
    # Gap records name ranges deleted unshipped, not ranges read: if the deletion
    # did not happen after all (a crash between the record and the unlink), the
    # file is read on from where it really was.
    segments = [(e.source, s) for e in spooled if e.kind == "batch" for s in e.segments]
    segments += [(r.source, r.segment) for r in delivered if r.kind == "batch"]
    for source, segment in segments:
        fid = segment.fingerprint.id
        known = merged.get(fid)
        if known is None:
            merged[fid] = Checkpoint(segment.fingerprint, source, segment.path, segment.end)
        elif segment.end > known.offset:
            known.offset = segment.end
    return merged
