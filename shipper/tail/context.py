"""What the reader's parts share: settings, the checkpoints, the file table, and
the events that wake, stop or rescan."""

from __future__ import annotations

__all__ = ["ChangeEvents", "TailContext"]

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from shipper.batch.batcher import BatchLimits
from shipper.config import Settings
from shipper.logs import ThrottledLog
from shipper.tail.backfill_files import BackfillProgress
from shipper.tail.compressed import RefusedFiles
from shipper.tail.files import FileTable
from shipper.tail.globs import Refusals, SourceRoots
from shipper.tail.known import KnownFiles

log = logging.getLogger("shipper.tail")


@dataclass(slots=True)
class ChangeEvents:
    #: Events are being received: files at their end wait for one (or the periodic
    #: sweep) instead of being read every round.
    live: bool = False
    #: Paths events named since the last round.
    dirty: set[str] = field(default_factory=set)
    #: When every file is looked at again, events or not.
    next_sweep: float = 0.0
    #: Where each source's files may live, resolved at the last scan: a file an event
    #: names is opened against these, without a realpath on the event loop.
    roots: dict[str, SourceRoots] = field(default_factory=dict)
    #: Paths to look at alone, without a scan of everything: ones written to that are
    #: not open (parked, or without a first line yet), in the order events named them.
    targets: dict[str, None] = field(default_factory=dict)
    #: Targets were named, or slots were freed for files waiting to be opened.
    targeted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True, kw_only=True)
class TailContext:
    settings: Settings
    limits: BatchLimits
    #: ``shipper backfill``: read every file to its end, deliver it all, and exit.
    one_shot: bool = False
    backfill: BackfillProgress = field(default_factory=BackfillProgress)
    known: KnownFiles = field(default_factory=KnownFiles)
    files: FileTable = field(default_factory=FileTable)
    events: ChangeEvents = field(default_factory=ChangeEvents)
    #: The reader's own outcome counters (the chain and the uploader keep theirs).
    counters: Counter[str] = field(default_factory=Counter)
    warnings: ThrottledLog = field(default_factory=lambda: ThrottledLog(log, interval_secs=10.0))
    errors: ThrottledLog = field(
        default_factory=lambda: ThrottledLog(log, interval_secs=60.0, level=logging.ERROR)
    )
    #: Paths the globs match that are never read (symlinks out, FIFOs, ...): each
    #: logged once and counted. Only the scans discover with it.
    refusals: Refusals = field(default_factory=Refusals)
    #: Compressed files refused as bombs, reported once by the reader or the guard.
    refused: RefusedFiles
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    rescan: asyncio.Event = field(default_factory=asyncio.Event)
    space_freed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Held by the reader for each round and by each scan; the disk guard takes both
    #: to let go of a file it deletes while neither is half-way through it.
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)
    scanning: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Checkpoints changed since the last save.
    checkpoints_dirty: bool = False
    #: The state directory held checkpoints at start: ``read_from = "end"`` is moot.
    had_state: bool = False
    #: The first scan is done: the daemon is reading.
    started: bool = False
