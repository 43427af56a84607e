"""Reading again the lines of damaged spool entries: which to read, and from where."""

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from shipper import refill
from shipper.ledger import LedgerRecord
from shipper.sources.checkpoints import Checkpoint
from shipper.sources.fingerprint import Fingerprint
from shipper.spool import DamagedEntry, Segment, SpoolEntry

LINES = [b'{"seq": %d, "msg": "words"}' % i for i in range(1000)]
DATA = b"".join(line + b"\n" for line in LINES)
ENDS = [sum(len(x) + 1 for x in LINES[: i + 1]) for i in range(len(LINES))]


def fingerprint_of(path: Path) -> Fingerprint:
    st = path.stat()
    head = DATA[: DATA.index(b"\n") + 1]
    return Fingerprint(st.st_dev, st.st_ino, len(head), hashlib.sha256(head).hexdigest())


def damaged(fp: Fingerprint, start: int, end: int, *, header: bool = True) -> DamagedEntry:
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
    )


FP = Fingerprint(1, 2, 10, "ab" * 32)


def spooled(start: int, end: int) -> SpoolEntry:
    return SpoolEntry(
        Path("/s/y.entry"), 1, "k", "app", (Segment(FP, "/l/app.log", start, end, 1),),
        1, "00", 1, "zstd", 1,
    )  # fmt: skip


def test_plan_sorts_damaged_entries_by_what_can_be_done() -> None:
    known = {FP.id: Checkpoint(FP, "app", "/l/app.log", 500)}
    delivered = [LedgerRecord("k-0", "app", Segment(FP, "/l/app.log", 0, 100, 3))]
    plan = refill.plan(
        [
            damaged(FP, 0, 100),  # its key is in the ledger
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
    assert [(h.start, h.end, h.first_time, h.source) for h in plan.holes] == [
        (200, 300, 5.0, "app"),
        (300, 400, None, "app"),
    ]
    assert [(d.start, why) for d, why in plan.settled] == [
        (0, "already delivered"),
        (100, "already read again"),
        (500, "the file's position is before the range"),
    ]
    assert [d.start for d, _ in plan.lost] == [450, None, 0]
    assert plan.pending and not refill.Plan([], [], []).pending


def hole_for(path: Path, start: int, end: int, fp: Fingerprint | None = None) -> refill.Hole:
    fp = fp or fingerprint_of(path)
    entry = damaged(fp, start, end)
    return refill.Hole(entry, "app", fp, str(path), start, end, 5.0)


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


def test_a_shorter_file_with_the_inode_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(DATA)
    hole = hole_for(path, ENDS[9], ENDS[19])
    os.truncate(path, ENDS[15])
    with pytest.raises(refill.RefillError):
        read_all(hole, [tmp_path])
