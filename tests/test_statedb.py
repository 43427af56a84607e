"""The state database: rows per file, saves of what changed, deliveries, and the one-time
conversion of the first format (``checkpoints.json`` and ``ledger.jsonl``)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import orjson
import pytest

from shipper.app.recover import resume_positions
from shipper.batch.pack import PackedBatch
from shipper.batch.segment import Segment
from shipper.deliver.ledger import Ledger
from shipper.errors import StateError
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker
from shipper.spool.entry import SpoolEntry
from shipper.spool.spool import Spool
from shipper.state.delivered import ShippedIndex
from shipper.state.migration import migrate_legacy_state
from shipper.state.statedb import StateDB, Totals, read_state, read_totals
from shipper.tail.checkpoints import Checkpoint

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="ab" * 32)
OTHER = Fingerprint(dev=1, ino=3, head_len=10, head_sha256="cd" * 32)
GONE = Fingerprint(dev=1, ino=4, head_len=10, head_sha256="ef" * 32)
MARK = Marker(170, "12" * 8)


def opened(tmp_path: Path) -> StateDB:
    db = StateDB(tmp_path / "state.db")
    db.open()
    return db


def seal(spool: Spool, start: int, end: int, fp: Fingerprint = FP) -> SpoolEntry:
    return spool.seal(
        PackedBatch(
            key=f"k-{fp.ino}-{start}-{end}",
            source="app",
            segments=(Segment(fp, "/l/app.log", start, end, 2),),
            records=2,
            body=b"zzz",
            body_sha256="00" * 32,
            uncompressed_bytes=10,
            codec="zstd",
            first_time=1.0,
            end_marker=Marker(end, "12" * 8),
        )
    )


def test_checkpoints_keep_markers_finished_and_when_last_seen(tmp_path: Path) -> None:
    db = opened(tmp_path)
    checkpoint = Checkpoint(
        FP, "app", "/l/app.log", 100, seen_at=12.5, markers=(MARK,), finished=True, copy_of="ab"
    )
    db.save_checkpoints([checkpoint], [])
    db.close()
    db = opened(tmp_path)
    loaded = db.load().checkpoints[FP.id]
    assert loaded == checkpoint
    db.close()


def test_a_save_writes_what_changed_and_forgetting_drops_both_rows(tmp_path: Path) -> None:
    db = opened(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.recover()
    index = ShippedIndex()
    ledger = Ledger(db, index)
    db.save_checkpoints([Checkpoint(FP, "app", "a", 10), Checkpoint(OTHER, "app", "b", 20)], [])
    ledger.append(seal(spool, 0, 10), outcome="stored")
    ledger.append(seal(spool, 0, 20, fp=OTHER), outcome="already_present")
    db.save_checkpoints([Checkpoint(FP, "app", "a", 30)], [])  # OTHER's row is untouched
    state = read_state(tmp_path)
    assert {fid: c.offset for fid, c in state.checkpoints.items()} == {FP.id: 30, OTHER.id: 20}
    assert {f.fingerprint.id for f in state.shipped} == {FP.id, OTHER.id}

    db.save_checkpoints([], [OTHER.id])
    state = read_state(tmp_path)
    assert list(state.checkpoints) == [FP.id]
    assert [f.fingerprint.id for f in state.shipped] == [FP.id]
    assert read_totals(tmp_path) == Totals(stored=1, already_present=1, records=4)
    db.close()


def test_deliveries_merge_into_one_row_per_file(tmp_path: Path) -> None:
    db = opened(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.recover()
    index = ShippedIndex()
    ledger = Ledger(db, index)
    for start in range(0, 1000, 10):
        ledger.append(seal(spool, start, start + 10), outcome="stored")
    (row,) = read_state(tmp_path).shipped
    assert row.ranges == [(0, 1000)]
    assert row.end_marker == Marker(1000, "12" * 8)
    assert index.get(FP.id) == row
    assert read_totals(tmp_path).stored == 100
    db.close()


def test_the_state_is_private_and_a_symlink_in_its_place_is_refused(tmp_path: Path) -> None:
    db = opened(tmp_path)
    db.close()
    assert stat.S_IMODE((tmp_path / "state.db").stat().st_mode) == 0o600
    elsewhere = tmp_path / "elsewhere.db"
    elsewhere.write_bytes(b"")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "state.db").symlink_to(elsewhere)
    with pytest.raises(StateError, match=r"state\.db"):
        StateDB(tmp_path / "linked" / "state.db").open()


def test_a_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    import sqlite3

    db = opened(tmp_path)
    db.close()
    raw = sqlite3.connect(tmp_path / "state.db")
    raw.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    raw.commit()
    raw.close()
    with pytest.raises(StateError, match="schema version 99"):
        opened(tmp_path)


def test_resume_takes_the_largest_of_checkpoint_spool_and_deliveries(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    spooled = [seal(spool, 100, 150), seal(spool, 0, 40, fp=OTHER)]
    delivered = ShippedIndex()
    delivered.add_entry(seal(spool, 150, 170))
    merged = resume_positions({FP.id: Checkpoint(FP, "app", "/l/app.log", 120)}, spooled, delivered)
    assert merged[FP.id].offset == 170
    assert merged[OTHER.id].offset == 40
    only_checkpoint = resume_positions({FP.id: Checkpoint(FP, "app", "p", 500)}, spooled, delivered)
    assert only_checkpoint[FP.id].offset == 500


def test_a_file_known_only_by_its_deliveries_comes_back_with_its_end_marker() -> None:
    """Delivered before its checkpoint was first saved: known again with the marker of
    its end (a reused inode is not taken for it) and as last seen then, not now."""
    delivered = ShippedIndex()
    delivered.add_entry(
        SpoolEntry(
            Path("/s/1.entry"),
            1,
            "k",
            "app",
            (Segment(FP, "/l/a.log", 0, 170, 3),),
            3,
            "00",
            1,
            "zstd",
            1,
            end_marker=MARK,
        )
    )
    (shipped,) = list(delivered)
    resumed = resume_positions({}, [], delivered)[FP.id]
    assert (resumed.offset, resumed.markers, resumed.finished) == (170, (MARK,), False)
    assert resumed.seen_at == shipped.delivered_at


# ------------------------------------------------------------------ migration


def legacy_ledger_line(fp: Fingerprint, start: int, end: int, delivered_at: float) -> bytes:
    record = {
        "v": 1,
        "key": f"k-{fp.ino}-{start}-{end}",
        "source": "app",
        "segments": [Segment(fp, f"/l/{fp.ino}.log", start, end, 1).to_json()],
        "records": 1,
        "body_sha256": "00",
        "uncompressed_bytes": 1,
        "outcome": "stored",
        "delivered_at": delivered_at,
        "end_marker": [end, "34" * 8],
    }
    return orjson.dumps(record) + b"\n"


def test_the_first_format_is_converted_once_and_removed(tmp_path: Path) -> None:
    now = time.time()
    live = Checkpoint(FP, "app", "/l/2.log", 30, seen_at=now - 5, markers=(MARK,), finished=True)
    (tmp_path / "checkpoints.json").write_bytes(
        orjson.dumps({"version": 1, "checkpoints": [live.to_json()]})
    )
    lines = [legacy_ledger_line(FP, s, s + 10, now - 100) for s in (0, 10, 20)]
    lines += [legacy_ledger_line(OTHER, 0, 50, now - 60)]  # delivered, never checkpointed
    lines += [legacy_ledger_line(GONE, s, s + 5, now - 30 * 86400) for s in range(0, 500, 5)]
    (tmp_path / "ledger.jsonl").write_bytes(b"".join(lines) + b'{"v":1,"key":"torn')
    db = opened(tmp_path)
    report = migrate_legacy_state(tmp_path, db, grace_secs=7 * 86400, now=now)
    assert report is not None
    assert (report.ledger_lines, report.recent_from_ledger, report.forgotten_from_ledger) == (
        104,
        1,
        1,
    )
    state = db.load()
    assert state.checkpoints[FP.id] == live  # markers, finished and seen_at as they were
    recent = state.checkpoints[OTHER.id]
    assert (recent.offset, recent.markers, recent.seen_at) == (
        50,
        (Marker(50, "34" * 8),),
        now - 60,
    )
    assert GONE.id not in state.checkpoints
    assert {f.fingerprint.id: f.ranges for f in state.shipped} == {
        FP.id: [(0, 30)],
        OTHER.id: [(0, 50)],
    }
    assert db.totals() == Totals(stored=104, records=104)
    assert sorted(os.listdir(tmp_path)) == ["state.db", "state.db-shm", "state.db-wal"]
    # A second start has nothing to convert.
    assert migrate_legacy_state(tmp_path, db, grace_secs=7 * 86400, now=now) is None
    db.close()


def test_old_files_left_by_a_crash_after_the_conversion_are_only_removed(tmp_path: Path) -> None:
    db = opened(tmp_path)
    db.save_checkpoints([Checkpoint(FP, "app", "a", 99)], [])
    (tmp_path / "ledger.jsonl").write_bytes(legacy_ledger_line(OTHER, 0, 50, time.time()))
    assert migrate_legacy_state(tmp_path, db, grace_secs=60, now=time.time()) is None
    assert not (tmp_path / "ledger.jsonl").exists()
    assert list(db.load().checkpoints) == [FP.id]
    db.close()
