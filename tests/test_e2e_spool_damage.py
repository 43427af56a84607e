"""Spool entries damaged on disk: detected, set aside, and their lines read again.

The store is down, so sealed batches wait in the spool. Entries are then
damaged (truncated, a flipped body byte, a flipped header byte) and the files
they came from are rotated away, one of them compressed. Every line still
arrives exactly once: the damaged ranges are read again from wherever the
files went.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from shipper.exit_codes import ExitCode
from shipper.spool.entry import decode_header
from shipper.state.statedb import read_state
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer
from tests.support.store import assert_exact, spool_file_ends, wait_for

pytestmark = pytest.mark.e2e


def file_ranges(entry: Path) -> list[tuple[str, int]]:
    """Each file range an entry holds, as (fingerprint id, end), from its header: an
    entry may hold ranges of several files of a source."""
    header, _ = decode_header(entry.read_bytes())
    return [(s["fingerprint"]["id"], int(s["end"])) for s in header["segments"]]


def sealed_to_the_end(spool: Path, files: list[Path]) -> bool:
    return sorted(spool_file_ends(spool).values()) == sorted(f.stat().st_size for f in files)


def checkpointed_to_the_end(state: Path, files: list[Path]) -> bool:
    """Whether the saved checkpoints are past every entry (the reader will not re-read)."""
    offsets = [c.offset for c in read_state(state).checkpoints.values()]
    return sorted(offsets) == sorted(f.stat().st_size for f in files)


def damage(entry: Path, how: str) -> None:
    data = bytearray(entry.read_bytes())
    if how == "truncate":
        data = data[:-100]
    elif how == "flip_body":
        data[-10] ^= 0x40
    elif how == "flip_header":
        data[30] ^= 0x01
    entry.write_bytes(bytes(data))


def test_damaged_entries_are_read_again_from_rotated_files(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    shipping = Shipping(tmp_path, **store, batch_max_bytes="8KiB")
    seaweed = store["seaweed"]
    app, other = shipping.logs / "app.log", shipping.logs / "other.log"
    run_writer(app, 0, 1500)
    run_writer(other, 1500, 1000)
    spool = shipping.state / "spool"
    seaweed.stop()
    try:
        with shipping.daemon:
            wait_for(lambda: sealed_to_the_end(spool, [app, other]), 60, message="all sealed")
            wait_for(
                lambda: checkpointed_to_the_end(shipping.state, [app, other]),
                60,
                message="checkpoints saved past every entry",
            )
            shipping.daemon.kill9()
        entries = sorted(spool.glob("*.entry"))
        by_file: dict[str, list[Path]] = {}
        for entry in entries:  # in seal order
            for fid, _ in file_ranges(entry):
                by_file.setdefault(fid, []).append(entry)
        assert all(len(group) >= 6 for group in by_file.values())
        # app.log is the longer file: its entries reach further.
        ends = spool_file_ends(spool)
        app_id, other_id = sorted(by_file, key=lambda fid: -ends[fid])
        app_entries, other_entries = by_file[app_id], by_file[other_id]
        # Three kinds of damage in one file, in its first, middle and last entries.
        damage(app_entries[0], "truncate")
        damage(app_entries[len(app_entries) // 2], "flip_body")
        damage(app_entries[-1], "flip_header")
        damage(other_entries[1], "flip_body")
        # While stopped: app.log rotated out of the globs, other.log compressed away.
        app.rename(shipping.logs / "app.log.1")
        gz = shipping.logs / "other.log.1.gz"
        gz.write_bytes(gzip.compress(other.read_bytes()))
        other.unlink()
        run_writer(app, 2500, 500)  # a new app.log goes on
    finally:
        seaweed.start()
    with shipping.daemon:
        shipping.finish(3000)
    log = shipping.daemon.log_text()
    assert log.count("its lines were read again from the file") == 4
    assert "are lost" not in log
    corrupt = sorted(p.name for p in (spool / "corrupt").iterdir())
    assert len(corrupt) == 4
    assert not [p for p in spool.glob("*.entry") if p.name in corrupt]


def test_an_entry_damaged_while_running_is_read_again(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    shipping = Shipping(tmp_path, **store, batch_max_bytes="8KiB")
    seaweed = store["seaweed"]
    app = shipping.logs / "app.log"
    run_writer(app, 0, 1000)
    spool = shipping.state / "spool"
    seaweed.stop()
    try:
        shipping.daemon.start()
        wait_for(lambda: sealed_to_the_end(spool, [app]), 60, message="all sealed")
        victim = sorted(spool.glob("*.entry"))[2]
        damage(victim, "flip_body")
        wait_for((spool / "corrupt" / victim.name).exists, 60, message="the entry set aside")
    finally:
        seaweed.start()
    try:
        assert_exact(shipping.wait_delivered(1000), range(1000))
        assert shipping.daemon.terminate() == ExitCode.OK
        assert_exact(shipping.delivered(), range(1000))
        assert "its lines were read again from the file" in shipping.daemon.log_text()
    finally:
        shipping.daemon.close()
