"""Retention and the disk guard's decisions: what the ledger proves shipped, and what goes."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from shipper.app.recover import resume_positions
from shipper.batch.objectkey import compile_template, is_gap_key
from shipper.batch.segment import Segment
from shipper.files.fingerprint import Fingerprint, head_of
from shipper.files.markers import Marker, marker_of
from shipper.housekeeping.gaps import encode_gap
from shipper.housekeeping.loss import Loss
from shipper.housekeeping.retention import DiskUsage, RotatedFile, choose, measure_loss, survey
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.spool.refill import plan
from shipper.state.delivered import ShippedFile, ShippedIndex
from shipper.tail.checkpoints import Checkpoint

LINES = b"".join(b'{"seq": %d, "msg": "hello"}\n' % i for i in range(200))


def fingerprint_of(path: Path) -> Fingerprint:
    st_ = os.stat(path)
    head = head_of(path.read_bytes()[:256], 256)
    assert head is not None
    return Fingerprint(st_.st_dev, st_.st_ino, len(head), hashlib.sha256(head).hexdigest())


def marker_at(data: bytes, end: int) -> Marker:
    marker = marker_of(lambda n, at: data[at : at + n], end)
    assert marker is not None
    return marker


def entry(fp: Fingerprint, start: int, end: int, marker: Marker | None) -> SpoolEntry:
    return SpoolEntry(
        path=Path("/spool/x"),
        seq=1,
        key=f"k-{start}-{end}",
        source="app",
        segments=(Segment(fp, "/logs/app.log", start, end, 1),),
        records=1,
        body_sha256="",
        uncompressed_bytes=0,
        codec="zstd",
        size=1,
        end_marker=marker,
    )


def shipped_index(fp: Fingerprint, data: bytes, cuts: list[int]) -> ShippedIndex:
    """An index holding ``data``'s ranges between ``cuts``, each with its end marker."""
    index = ShippedIndex()
    for start, end in itertools.pairwise(cuts):
        index.add_entry(entry(fp, start, end, marker_at(data, end)))
    return index


# ------------------------------------------------------------------ ShippedFile


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 60)), max_size=30))
def test_ranges_merge_to_their_union(pieces: list[tuple[int, int]]) -> None:
    shipped = ShippedFile(Fingerprint(1, 2, 3, "x"))
    covered: set[int] = set()
    for start, length in pieces:
        shipped.add(start, start + length, None)
        covered.update(range(start, start + length))
    from_ranges = {i for start, end in shipped.ranges for i in range(start, end)}
    assert from_ranges == covered
    # Merged: sorted, and no two ranges touch.
    assert all(a[1] < b[0] for a, b in zip(shipped.ranges, shipped.ranges[1:], strict=False))
    expected = 0
    while expected in covered:
        expected += 1
    assert shipped.shipped_from_zero == expected


def test_proof_needs_every_byte_from_zero_and_a_marker_at_the_end() -> None:
    fp = Fingerprint(1, 2, 3, "x")
    shipped = ShippedFile(fp)
    shipped.add(100, 200, Marker(200, "b"))
    assert shipped.proves(200) is None  # a hole at the start
    shipped.add(0, 100, Marker(100, "a"))
    assert shipped.proves(200) == Marker(200, "b")
    assert shipped.proves(150) is None  # no marker there: the file would be another length
    assert shipped.proves(250) is None  # longer than delivered


def test_gap_records_prove_nothing_shipped() -> None:
    fp = Fingerprint(1, 2, 3, "x")
    index = ShippedIndex()
    gap = entry(fp, 0, 100, Marker(100, "a"))
    index.add_entry(SpoolEntry(**{**_fields(gap), "kind": "gap"}))
    assert index.get(fp.id) is None


def _fields(e: SpoolEntry) -> dict[str, object]:
    return {name: getattr(e, name) for name in SpoolEntry.__dataclass_fields__}


# ----------------------------------------------------------------------- survey


def rotated(tmp_path: Path, name: str = "app.log.1", data: bytes = LINES) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def finished(path: Path, data: bytes, *, done: bool = True) -> Checkpoint:
    fp = fingerprint_of(path)
    return Checkpoint(
        fp,
        "app",
        str(path),
        len(data),
        markers=(marker_at(data, len(data)),),
        finished=done,
    )


def run_survey(
    paths: list[Path],
    known: list[Checkpoint],
    index: ShippedIndex,
    *,
    live: set[tuple[int, int]] | None = None,
    open_files: dict[tuple[int, int], tuple[Checkpoint, bool]] | None = None,
) -> dict[str, RotatedFile]:
    found = survey(
        [("app", str(p)) for p in paths],
        known={c.fingerprint.id: c for c in known},
        index=index,
        live=live or set(),
        open_files=open_files or {},
        streams={},
        bases={"app": sorted({str(p.parent) for p in paths})},
    )
    return {Path(f.path).name: f for f in found}


def test_a_rotated_file_shipped_whole_is_proven(tmp_path: Path) -> None:
    path = rotated(tmp_path)
    checkpoint = finished(path, LINES)
    index = shipped_index(checkpoint.fingerprint, LINES, [0, 1000, 2500, len(LINES)])
    found = run_survey([path], [checkpoint], index)
    assert found["app.log.1"].shipped
    assert found["app.log.1"].length == len(LINES)


def test_a_hole_or_changed_bytes_or_a_live_file_are_not_proven(tmp_path: Path) -> None:
    path = rotated(tmp_path)
    checkpoint = finished(path, LINES)
    holed = shipped_index(checkpoint.fingerprint, LINES, [0, 1000])
    holed.add_entry(entry(checkpoint.fingerprint, 1500, len(LINES), marker_at(LINES, len(LINES))))
    assert not run_survey([path], [checkpoint], holed)["app.log.1"].shipped

    index = shipped_index(checkpoint.fingerprint, LINES, [0, len(LINES)])
    changed = LINES[:-5] + b"XXXX\n"
    path.write_bytes(changed)  # same inode, same first line, same length
    assert not run_survey([path], [checkpoint], index)["app.log.1"].shipped

    path.write_bytes(LINES)
    live = finished(path, LINES, done=False)
    assert run_survey([path], [live], index) == {}  # still followed: never a candidate
    assert (
        run_survey(
            [path],
            [checkpoint],
            index,
            live={(checkpoint.fingerprint.dev, checkpoint.fingerprint.ino)},
        )
        == {}
    )
    assert run_survey([path], [], index) == {}  # never identified: not ours to judge


def test_a_renamed_file_is_rotated_and_one_being_read_is_open(tmp_path: Path) -> None:
    path = rotated(tmp_path)
    checkpoint = finished(path, LINES, done=False)
    fp = checkpoint.fingerprint
    index = shipped_index(fp, LINES, [0, len(LINES)])
    checkpoint.origin = str(tmp_path / "app.log")  # first found there, renamed since
    found = run_survey([path], [checkpoint], index)["app.log.1"]
    assert found.shipped and not found.open
    # A new file at the origin changes nothing: this one is still the renamed one.
    (tmp_path / "app.log").write_bytes(b"new\n")
    assert run_survey([path], [checkpoint], index)["app.log.1"].shipped
    held = {(fp.dev, fp.ino): (checkpoint, False)}
    being_read = run_survey([path], [checkpoint], ShippedIndex(), open_files=held)
    assert being_read["app.log.1"].open and not being_read["app.log.1"].shipped


def test_the_live_file_seen_through_another_path_is_not_rotated(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = rotated(logs, "app.log")
    checkpoint = finished(path, LINES, done=False)
    index = shipped_index(checkpoint.fingerprint, LINES, [0, len(LINES)])
    alias = tmp_path / "alias"
    alias.symlink_to(logs)  # the config now reaches the same directory another way
    assert run_survey([alias / "app.log"], [checkpoint], index) == {}
    fp = checkpoint.fingerprint
    held = {(fp.dev, fp.ino): (checkpoint, False)}
    assert run_survey([alias / "app.log"], [checkpoint], index, open_files=held) == {}


def test_a_compressed_rotation_of_a_shipped_file_is_proven(tmp_path: Path) -> None:
    original = rotated(tmp_path, "app.log.1")
    checkpoint = finished(original, LINES)
    index = shipped_index(checkpoint.fingerprint, LINES, [0, 3000, len(LINES)])
    compressed = tmp_path / "app.log.2.gz"
    compressed.write_bytes(gzip.compress(LINES))
    other = tmp_path / "app.log.3.gz"  # the same first line, a different file
    other.write_bytes(gzip.compress(LINES[:3000] + b'{"seq": "x"}\n'))
    found = run_survey([compressed, other], [checkpoint], index)
    assert found["app.log.2.gz"].shipped
    assert found["app.log.2.gz"].length == len(LINES)
    assert found["app.log.2.gz"].fingerprint == checkpoint.fingerprint
    assert not found["app.log.3.gz"].shipped


# ----------------------------------------------------------------------- choose


def file(
    name: str,
    *,
    mtime: float,
    size: int = 1000,
    shipped: bool = True,
    opened: bool = False,
    dev: int = 1,
) -> RotatedFile:
    return RotatedFile(
        path=f"/logs/{name}",
        source="app",
        dev=dev,
        ino=hash(name) & 0xFFFF,
        size=size,
        mtime=mtime,
        mtime_ns=int(mtime * 1e9),
        disk_bytes=size,
        compressed=False,
        open=opened,
        fingerprint=None,
        length=size,
        shipped=shipped,
    )


def decide(
    files: list[RotatedFile],
    *,
    used: int = 0,
    available: int = 10**9,
    **options: object,
) -> dict[str, str]:
    settings: dict[str, object] = {
        "now": 10_000.0,
        "max_age_secs": None,
        "max_total_bytes": None,
        "high_watermark": 0.9,
        "critical_watermark": 0.95,
        "delete_unshipped": False,
        "quiet_secs": {"app": 5.0},
        **options,
    }
    plan = choose(files, {1: DiskUsage("/logs", used, available)}, **settings)  # type: ignore[arg-type]
    return {Path(d.file.path).name: d.reason for d in plan.deletions}


def test_age_deletes_only_old_shipped_files() -> None:
    files = [
        file("old", mtime=1000),
        file("old-unshipped", mtime=1000, shipped=False),
        file("old-open", mtime=1000, opened=True),
        file("young", mtime=9500),
    ]
    assert decide(files, max_age_secs=1000) == {"old": "max_age", "old-open": "max_age"}


def test_total_bytes_deletes_oldest_shipped_first_until_under() -> None:
    files = [file(f"f{i}", mtime=1000 + i, size=1000) for i in range(5)]
    files.append(file("unshipped", mtime=900, size=1000, shipped=False))
    # 6,000 bytes in all, 3,500 allowed: the three oldest shipped go.
    assert decide(files, max_total_bytes=3500) == {f"f{i}": "max_total_bytes" for i in range(3)}


def test_high_watermark_deletes_shipped_until_below_and_never_unshipped() -> None:
    files = [
        file("unshipped", mtime=100, size=300, shipped=False),
        file("a", mtime=200, size=300),
        file("b", mtime=300, size=300),
        file("c", mtime=400, size=300),
    ]
    # 9,500 of 10,000 used (95%): two shipped files bring it to 8,900 (89%).
    decided = decide(files, used=9500, available=500, critical_watermark=0.99)
    assert decided == {"a": "high_watermark", "b": "high_watermark"}


def test_critical_keeps_unshipped_unless_told_and_says_so() -> None:
    files = [
        file("u1", mtime=100, size=400, shipped=False),
        file("u2", mtime=200, size=400, shipped=False, opened=True),
        file("u3", mtime=300, size=400, shipped=False),
        file("s", mtime=400, size=200),
    ]
    usage = {1: DiskUsage("/logs", 9800, 200)}
    options = {
        "now": 10_000.0,
        "max_age_secs": None,
        "max_total_bytes": None,
        "high_watermark": 0.9,
        "critical_watermark": 0.95,
        "quiet_secs": {},
    }
    kept = choose(files, usage, delete_unshipped=False, **options)  # type: ignore[arg-type]
    assert [d.file.path for d in kept.deletions] == ["/logs/s"]
    assert kept.critical == {1: pytest.approx(0.96)}
    dropped = choose(files, usage, delete_unshipped=True, **options)  # type: ignore[arg-type]
    # The shipped one first (96%), then the oldest unshipped: 9,200 (92%), below critical.
    reasons = {Path(d.file.path).name: d.reason for d in dropped.deletions}
    assert reasons == {"s": "high_watermark", "u1": "critical_watermark"}
    assert dropped.critical == {}


def test_a_file_written_in_its_quiet_period_is_left_alone() -> None:
    files = [file("fresh", mtime=9999, shipped=False), file("fresh-shipped", mtime=9999)]
    decided = decide(files, used=9990, available=10, delete_unshipped=True, max_age_secs=1.0)
    assert decided == {}


# ------------------------------------------------------------------ measure_loss


def test_loss_of_a_plain_file_starts_at_its_sealed_end(tmp_path: Path) -> None:
    path = rotated(tmp_path)
    checkpoint = finished(path, LINES)
    checkpoint.offset = LINES.index(b'{"seq": 150')
    found = run_survey([path], [checkpoint], ShippedIndex())["app.log.1"]
    fd = os.open(path, os.O_RDONLY)
    try:
        loss = measure_loss(found, [checkpoint], fd)
    finally:
        os.close(fd)
    assert (loss.start, loss.end, loss.lines) == (checkpoint.offset, len(LINES), 50)
    assert loss.fingerprint == checkpoint.fingerprint


def test_loss_of_a_compressed_file_is_proven_by_markers_else_whole(tmp_path: Path) -> None:
    original = rotated(tmp_path, "app.log.1", LINES + b'{"seq": "no newline"}')
    sealed_at = LINES.index(b'{"seq": 120')
    checkpoint = finished(original, LINES[:sealed_at])
    checkpoint.offset = sealed_at
    original.unlink()
    compressed = tmp_path / "app.log.1.gz"
    compressed.write_bytes(gzip.compress(LINES + b'{"seq": "no newline"}'))
    found = run_survey([compressed], [checkpoint], ShippedIndex())["app.log.1.gz"]
    loss = measure_loss(found, [checkpoint], -1)  # a compressed file is read by its path
    assert (loss.start, loss.lines) == (sealed_at, 81)
    assert loss.fingerprint == checkpoint.fingerprint
    # Markers that do not match: nothing is proven sealed, the whole file is the loss.
    checkpoint.markers = (Marker(sealed_at, "0" * 16),)
    whole = measure_loss(found, [checkpoint], -1)
    assert (whole.start, whole.lines, whole.fingerprint) == (0, 201, None)


def test_a_gap_record_moves_no_resume_position_and_is_never_read_again() -> None:
    fp = Fingerprint(1, 2, 3, "x")
    checkpoint = Checkpoint(fp, "app", "/logs/app.log.1", 100)
    gap = SpoolEntry(**{**_fields(entry(fp, 100, 900, None)), "kind": "gap"})
    delivered = ShippedIndex()
    delivered.add_entry(SpoolEntry(**{**_fields(entry(fp, 900, 950, None)), "kind": "gap"}))
    resumed = resume_positions({fp.id: checkpoint}, [gap], delivered)
    assert resumed[fp.id].offset == 100  # the lines are still read if the file is still there
    damaged = DamagedEntry(
        path=Path("/spool/7.entry"),
        reason="body checksum mismatch",
        fingerprint_id=fp.id,
        start=100,
        end=900,
        fingerprint=fp,
        key="source=app/x-100-900.gap.ndjson.zst",
        source="app",
    )
    planned = plan([damaged], {fp.id: checkpoint}, [], delivered)
    assert planned.holes == [] and [why for _, why in planned.lost] == [
        "a damaged gap record (lines deleted unshipped)"
    ]


def test_a_gap_record_names_the_lost_range_beside_the_batches() -> None:
    keys = compile_template(
        "source={source}/host={host}/{fingerprint}-{start}-{end}",
        prefix="logs",
        static={},
        host="web-1",
        codec="zstd",
    )
    fp = Fingerprint(1, 2, 3, "x")
    lost = file("app.log.3", mtime=1000, shipped=False)
    gap = encode_gap(
        lost,
        Loss(fp, 100, 900, 7),
        "critical_watermark",
        host="web-1",
        keys=keys,
        codec="zstd",
        level=3,
        now=1_795_000_000.0,
    )
    batch_key = keys.render(
        source="app", fingerprint_id=fp.id, start=100, end=900, first_time=1_795_000_000.0
    )
    assert gap.key == batch_key.removesuffix(".ndjson.zst") + ".gap.ndjson.zst"
    assert is_gap_key(gap.key) and not is_gap_key(batch_key)
    assert gap.kind == "gap" and gap.records == 0
    record = orjson.loads(zstandard.decompress(gap.body))
    assert record["shipper_gap"] is True
    assert (record["fingerprint"], record["start"], record["end"], record["lines"]) == (
        fp.id,
        100,
        900,
        7,
    )
    assert record["reason"] == "deleted unshipped: critical_watermark"
    assert record["host"] == "web-1" and record["path"] == "/logs/app.log.3"
