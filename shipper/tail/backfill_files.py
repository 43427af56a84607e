"""``shipper backfill``: one pass over historical files, through the same chain and sink.

Every file the sources select is read from its checkpoint (a file never seen,
from its start) to its end, compressed ones included, and the run exits once
all of it is delivered. The state directory makes it resumable and idempotent:
a file read to its end is marked finished, so a second run ships nothing
twice, and an interrupted run goes on where it stopped.

A compressed file that holds a file already known (the rotation of a file the
daemon was reading) is continued under that file's identity, as the daemon
itself would; any other is a file of its own, known by its device, inode and
decompressed first line.
"""

from __future__ import annotations

__all__ = ["BackfillProgress", "CompressedToRead", "find_compressed_to_read"]

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shipper.files.durable import InodeKey, printable_path
from shipper.files.fingerprint import Fingerprint, head_of
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import match_stream
from shipper.tail.decompress import DecompressedStream, is_compressed


@dataclass(slots=True)
class BackfillProgress:
    #: Compressed files left for a later round (too many to open at once).
    more: bool = False
    #: Compressed files opened (or found done) in this run, by inode.
    seen: set[InodeKey] = field(default_factory=set)
    #: Files that could not be read, by path, with why: the run is then incomplete.
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CompressedToRead:
    stream: DecompressedStream
    #: Where it resumes: a known file's checkpoint, or a new one at byte 0.
    checkpoint: Checkpoint
    inode: InodeKey


def find_compressed_to_read(
    found: Iterable[tuple[str, str]],
    known: Mapping[str, Checkpoint],
    *,
    skip: set[InodeKey],
    skipped: dict[str, str],
    fingerprint_bytes: Mapping[str, int],
    budget: int,
    roots: Mapping[str, Sequence[str]],
) -> tuple[list[CompressedToRead], bool]:
    """Open up to ``budget`` compressed files among ``found`` that still hold unread lines.

    Blocking: run it in a thread. ``skip`` are inodes open or done in this run;
    files that cannot be read are added to ``skipped``. ``roots``: by source, where
    a file may really be (through a symlink). Returns the opened streams, and
    whether more were left for want of budget.
    """
    opened: list[CompressedToRead] = []
    # Only a checkpoint with markers can prove a stream holds its file: the first
    # line alone (a banner) is shared by many files.
    candidates = [c for c in known.values() if c.markers]
    for source, path in found:
        if not is_compressed(path):
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            skipped[printable_path(path)] = str(exc)
            continue
        inode = (st.st_dev, st.st_ino)
        if inode in skip:
            continue
        if len(opened) >= budget:
            return opened, True
        skip.add(inode)
        try:
            stream = DecompressedStream(path, roots=roots.get(source, ()))
        except OSError as exc:
            skipped[printable_path(path)] = str(exc)
            continue
        checkpoint = _resume_point(
            stream,
            source=source,
            inode=inode,
            candidates=candidates,
            known=known,
            fingerprint_bytes=fingerprint_bytes,
        )
        if checkpoint is None:
            if stream.damage is not None:
                skipped[printable_path(path)] = f"cannot decompress it: {stream.damage}"
            stream.close()
            continue
        opened.append(CompressedToRead(stream, checkpoint, inode))
    return opened, False


def _resume_point(
    stream: DecompressedStream,
    *,
    source: str,
    inode: InodeKey,
    candidates: list[Checkpoint],
    known: Mapping[str, Checkpoint],
    fingerprint_bytes: Mapping[str, int],
) -> Checkpoint | None:
    """The checkpoint to read the stream from, or None when nothing is left in it.

    Its own identity first (a run that read part of it); then whether it is the
    rotation of a known file, proven by that file's markers; else a new file.
    """
    size = fingerprint_bytes.get(source, 256)
    data = stream.pread(size, 0)
    # A compressed file is complete: a first line shorter than the limit and without
    # its newline is the whole file, and identifies it as well as any.
    head = head_of(data, size) or data
    if not head:
        return None  # empty
    fingerprint = Fingerprint(inode[0], inode[1], len(head), hashlib.sha256(head).hexdigest())
    checkpoint = known.get(fingerprint.id)
    if checkpoint is not None:
        return None if checkpoint.finished else checkpoint
    longest = max((c.fingerprint.head_len for c in candidates), default=0)
    rotation_of = match_stream(stream, candidates, longest) if candidates else None
    if rotation_of is not None:
        return None if rotation_of.finished else rotation_of
    return Checkpoint(fingerprint, source, printable_path(stream.path), 0)
