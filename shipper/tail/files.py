"""The table of file state: every file the reader holds or knows to come back to.

A file (by device and inode) is in one state at a time: open and read (``active``),
parked (closed at its end while idle), pre-opened (held since its creation event,
not yet identified), waiting for a free slot, or held back (a copy whose original
is still being read). Files without a complete first line yet are known by path
alone. Each state is its own index, so a read round visits the open files only,
however many are parked.
"""

from __future__ import annotations

__all__ = ["ActiveFile", "CopiesSeen", "FileTable", "Parked", "Preopened"]

import os
from dataclasses import dataclass, field

from shipper.batch.batcher import Batch, Batcher
from shipper.files.durable import InodeKey
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.known import WaitingFiles
from shipper.tail.multiline import LineJoiner
from shipper.tail.tailer import FileTailer, LineChunk


@dataclass(slots=True)
class ActiveFile:
    tailer: FileTailer
    batcher: Batcher
    inode: InodeKey
    #: The last read found no new bytes.
    at_eof: bool = False
    #: The file shrank below what was read (copytruncate): finish it, then re-identify.
    truncated: bool = False
    #: The last read or seal failed; retried, but not allowed to hold up the others.
    failing: bool = False
    #: Batches cut but not yet sealed (spool full, a failed write). They are sealed,
    #: in order, before the file is read any further.
    unsealed: list[Batch] = field(default_factory=list)
    #: Joins multiline records, when the source asks for it.
    joiner: LineJoiner | None = None
    #: The fingerprint id of the file this one is a copy of (copytruncate).
    copy_of: str | None = None
    #: Size and modification time at the last sweep: unchanged, a file at its end
    #: has nothing to read.
    stamp: tuple[int, int] | None = None
    #: Read from a position past its start (resumed after a restart, a copy
    #: continued): before its first lines go through the chain, look whether that
    #: position is inside a private key block, so its next lines are redacted.
    check_key_block: bool = False

    def lines_of(self, chunk: LineChunk) -> LineChunk:
        """Lines as records: joined into multiline records where configured."""
        return chunk if self.joiner is None else self.joiner.feed(chunk)


@dataclass(slots=True)
class Parked:
    """A file closed at its end while idle: reopened when its size changes."""

    checkpoint: Checkpoint
    size: int
    #: A rewrite to the same size still changes the modification time.
    mtime_ns: int


@dataclass(slots=True)
class Preopened:
    """A file opened the moment its creation was seen, before any scan identified it."""

    source: str
    path: str
    fd: int


@dataclass(slots=True)
class CopiesSeen:
    """What the scans know of copies (copytruncate) not yet read."""

    #: Held-back copies by inode: since when (monotonic) at the size they still have.
    held_since: dict[InodeKey, tuple[float, int]] = field(default_factory=dict)
    #: Files continued by a copy opened in the current scan.
    continued: set[str] = field(default_factory=set)
    #: Copies found beside their never-seen original (copytruncate under way at
    #: start): copy inode -> the original's fingerprint id. Held while it is read.
    paired: dict[InodeKey, str] = field(default_factory=dict)

    def forget_unseen(self, seen: set[InodeKey]) -> None:
        """Forget copies the last scan did not find (gone, or renamed out of the globs)."""
        for inode in set(self.held_since) - seen:
            del self.held_since[inode]
        for inode in set(self.paired) - seen:
            del self.paired[inode]


@dataclass(slots=True)
class FileTable:
    """Every file the reader holds or will come back to, by state (see the module)."""

    active: dict[InodeKey, ActiveFile] = field(default_factory=dict)
    parked: dict[InodeKey, Parked] = field(default_factory=dict)
    #: Holding the handle keeps a file readable even if it is rotated away or deleted at once.
    preopened: dict[InodeKey, Preopened] = field(default_factory=dict)
    #: Files found but not opened for want of a slot, by path, in the order found:
    #: opened from the front as slots are freed, without a scan of everything.
    waiting: WaitingFiles = field(default_factory=WaitingFiles)
    #: How many files the last scan left waiting: parking makes room for them.
    waiting_to_open: int = 0
    #: Files found without a complete first line yet, by path: every write rescans
    #: until they are open, so a quick rotation cannot take them away unread.
    unidentified: set[str] = field(default_factory=set)
    copies: CopiesSeen = field(default_factory=CopiesSeen)
    #: New files the last scan found waiting for a slot, to be known from their start.
    registered: list[Checkpoint] = field(default_factory=list)
    #: Parked files found shorter than when parked (truncated while closed).
    shrunk: set[InodeKey] = field(default_factory=set)
    #: Files finished at a truncation; the next scan looks for their copies.
    truncated_originals: list[Checkpoint] = field(default_factory=list)

    def free_slots(self, max_open: int) -> int:
        """Files that may be opened now: the open and the pre-opened hold the others."""
        return max_open - len(self.active) - len(self.preopened)

    def close_preopened(self) -> None:
        for held in self.preopened.values():
            os.close(held.fd)
        self.preopened.clear()
