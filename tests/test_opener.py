"""The opener: one reader per file, however many ways a scan finds it."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from shipper.batch.batcher import BatchLimits
from shipper.config import parse_config
from shipper.tail.compressed import RefusedFiles
from shipper.tail.context import TailContext
from shipper.tail.identify import Identified, identify
from shipper.tail.opener import Opener


def context(tmp_path: Path) -> TailContext:
    settings = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "sources": {"app": {"include": [str(tmp_path / "logs" / "*.log")]}},
            "sink": {"type": "directory", "path": str(tmp_path / "shipped")},
        },
        base_dir=tmp_path,
        environ={},
    )
    counters: Counter[str] = Counter()
    return TailContext(
        settings=settings,
        limits=BatchLimits(settings.batch.max_bytes, 1000, 5.0),
        counters=counters,
        refused=RefusedFiles(counters),
    )


def test_a_file_found_twice_is_tailed_by_its_first_reader_only(tmp_path: Path) -> None:
    # A file created during a scan is opened by that scan, and pre-opened by its
    # creation event; the next scan takes that handle. Two readers would ship it twice.
    ctx = context(tmp_path)
    saves = 0

    async def persist() -> None:
        nonlocal saves
        saves += 1

    opener = Opener(ctx, persist)
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    log.write_bytes(b'{"seq": 0}\n{"seq": 1}\n')

    st = os.stat(log)
    inode = (st.st_dev, st.st_ino)

    def found_now() -> Identified:
        identified = identify(str(log), fingerprint_bytes=256, candidates=ctx.known.index()[0])
        assert identified is not None
        return identified

    first = opener.open("app", str(log), inode, found_now(), initial=False)
    asyncio.run(opener.start_tailing([first]))
    assert ctx.files.active[inode] is first
    assert first.tailer.read() is not None  # reading has begun

    second = opener.open("app", str(log), inode, found_now(), initial=False)
    twice = opener.open("app", str(log), inode, found_now(), initial=False)
    asyncio.run(opener.start_tailing([second, twice]))

    assert ctx.files.active == {inode: first}
    assert first.tailer.offset == log.stat().st_size  # the first reader is untouched
    for closed in (second, twice):
        assert closed.tailer._fd is None  # its handle was let go
    assert saves == 1  # the file was made known once, before its first read
