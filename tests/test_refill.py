"""Reading again the lines of damaged spool entries: which to read, and from where."""

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from shipper.batch.segment import Segment
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker, marker_of
from shipper.spool import refill
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.state.delivered import ShippedIndex
from shipper.tail.checkpoints import Checkpoint

LINES = [b'{"seq": %d, "msg": "words"}' % i for i in range(1000)]
DATA = b"".join(line + b"\n" for line in LINES)
ENDS = [sum(len(x) + 1 for x in LINES[: i + 1]) for i in range(len(LINES))]


def fingerprint_of(path: Path) -> Fingerprint:
    st = path.stat()
    head = DATA[: DATA.index(b"\n") + 1]
    return Fingerprint(st.st_dev, st.st_ino, len(head), hashlib.sha256(head).hexdigest())


MARK = Marker(1, "00" * 8)


def damaged(
    fp: Fingerprint, start: int, end: int, *, header: bool = True, marker: Marker = MARK
) -> DamagedEntry:
    if not header:
        return DamagedEntry(Path("/s/x.entry"), "header checksum mismatch", fp.id, start, end)
    return DamagedEntry(
        Path("/s/x.entry"),
        "body checksum mismatch",
        fp.id,
        start,
        end,
        fingerprint=fp,
        key=f"k-{start}",
        source="app",
        file_path="/l/app.log",
        first_time=5.0,
        codec="zstd",
        end_marker=marker,
    )


FP = Fingerprint(1, 2, 10, "ab" * 32)


def spooled(start: int, end: int) -> SpoolEntry:
    return SpoolEntry(
        Path("/s/y.entry"), 1, "k", "app", (Segment(FP, "/l/app.log", start, end, 1),),
        1, "00", 1, "zstd", 1,
    )  # fmt: skip


def test_plan_sorts_damaged_entries_by_what_can_be_done() -> None:
    known = {FP.id: Checkpoint(FP, "app", "/l/app.log", 500, markers=(Marker(500, "ab" * 8),))}
    delivered = ShippedIndex()
    delivered.add_entry(spooled(0, 100))
    plan = refill.plan(
        [
            damaged(FP, 0, 100),  # delivered already
            damaged(FP, 100, 200),  # a good entry covers exactly this range
            damaged(FP, 200, 300),  # to read again
            damaged(FP, 300, 400, header=False),  # to read again, found by its name
            damaged(FP, 450, 550),  # the position is inside it
            damaged(FP, 500, 600),  # the reader will read it anyway
            DamagedEntry(Path("/s/z"), "bad magic", None, None, None),
            damaged(Fingerprint(9, 9, 1, "cd" * 32), 0, 10, header=False),  # unknown file
        ],
        known,
        [spooled(100, 200)],
        delivered,
    )
    assert [(h.start, h.end, h.first_time, h.source, h.key) for h in plan.holes] == [
        (200, 300, 5.0, "app", "k-200"),
        (300, 400, None, "app", None),
    ]
    # Checked against the header's end marker, else the file's checkpoint markers.
    assert [h.markers for h in plan.holes] == [(MARK,), known[FP.id].markers]
    assert [(d.start, why) for d, why in plan.settled] == [
        (0, "already delivered"),
        (100, "already read again"),
        (500, "the file's position is before the range"),
    ]
    assert [d.start for d, _ in plan.lost] == [450, None, 0]
    assert plan.pending and not refill.Plan([], [], []).pending


def hole_for(path: Path, start: int, end: int, fp: Fingerprint | None = None) -> refill.Hole:
    """A hole as the header of an entry sealed from ``path`` now would describe it."""
    fp = fp or fingerprint_of(path)
    data = path.read_bytes()
    marker = marker_of(lambda n, at: data[at : at + n], end)
    assert marker is not None
    entry = damaged(fp, start, end, marker=marker)
    return refill.Hole(entry, "app", fp, str(path), start, end, 5.0, (marker,), "k", "zstd")


def read_all(hole: refill.Hole, places: list[Path], chunk: int = 4096) -> list[bytes]:
    tailer = refill.open_hole(hole, places, chunk_bytes=chunk, max_line_bytes=1 << 20)
    try:
        return [line for c in refill.read_hole(hole, tailer) for line in c.lines]
    finally:
        tailer.close()


def test_reads_exactly_the_range_from_a_renamed_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[99], ENDS[599])
    path.rename(tmp_path / "app.log.1")  # rotated after the range was read
    (tmp_path / "app.log").write_bytes(DATA)  # a new file with the same first line
    assert read_all(hole, [tmp_path], chunk=1000) == LINES[100:600]


def test_reads_the_range_from_a_compressed_rotation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, 0, ENDS[9])
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(DATA))
    path.unlink()
    assert read_all(hole, [tmp_path]) == LINES[:10]


def test_a_missing_last_newline_still_ends_the_range(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA + b'{"seq": "last"}')
    assert read_all(hole_for(path, ENDS[-1], len(DATA) + 15), [tmp_path]) == [b'{"seq": "last"}']


def test_a_file_that_changed_or_vanished_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    # The range does not end at a line end any more.
    with pytest.raises(refill.RefillError, match="do not end at byte"):
        read_all(hole_for(path, ENDS[9], ENDS[19] + 3), [tmp_path])
    gone = hole_for(path, 0, ENDS[9])
    path.unlink()
    with pytest.raises(refill.RefillError, match="no file holds"):
        read_all(gone, [tmp_path])


def test_a_copytruncate_copy_holds_the_range(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[99], ENDS[199])
    (tmp_path / "app.log.1").write_bytes(DATA)  # the copy, on another inode
    os.truncate(path, 0)
    assert read_all(hole, [tmp_path]) == LINES[100:200]


def test_a_rewrite_with_the_same_first_line_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[9], ENDS[19])
    # Same inode, same first line, long enough; other lines.
    path.write_bytes(LINES[0] + b"\n" + DATA[ENDS[0] :].replace(b"words", b"WORDS"))
    with pytest.raises(refill.RefillError, match="no file holds"):
        read_all(hole, [tmp_path])


def test_the_right_one_of_two_compressed_files_with_one_banner(tmp_path: Path) -> None:
    other = DATA.replace(b"words", b"other")
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[9], ENDS[19])
    path.unlink()
    (tmp_path / "app.log-1.gz").write_bytes(gzip.compress(LINES[0] + b"\n" + other[ENDS[0] :]))
    (tmp_path / "app.log-2.gz").write_bytes(gzip.compress(DATA))
    assert read_all(hole, [tmp_path]) == LINES[10:20]


def test_a_range_that_starts_inside_a_private_key_block(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    block = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nqwertyQWERTY0123\n"
    path.write_bytes(DATA + block + b"-----END RSA PRIVATE KEY-----\n" + DATA)
    inside = len(DATA) + len(block) - 17  # the start of the last body line
    outside = len(DATA) + len(block) + 30
    tailer = refill.open_hole(
        hole_for(path, 0, ENDS[5]), [tmp_path], chunk_bytes=4096, max_line_bytes=1 << 20
    )
    try:
        assert refill.inside_key_block(tailer, inside)
        assert not refill.inside_key_block(tailer, outside)
        assert not refill.inside_key_block(tailer, ENDS[5])
    finally:
        tailer.close()


def test_a_shorter_file_with_the_inode_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[9], ENDS[19])
    os.truncate(path, ENDS[15])
    with pytest.raises(refill.RefillError):
        read_all(hole, [tmp_path])
