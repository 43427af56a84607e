"""Content markers: resuming only into the bytes we read, and recognising copies."""

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shipper.files.markers import (
    MARKER_BYTES,
    MARKERS_KEPT,
    Marker,
    Pread,
    check_markers,
    marker_of,
    remember,
)
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.identify import Identified, copies_found_together, identify, still_a_copy

BANNER = b"service starting\n"


def lines(first: int, count: int) -> bytes:
    return b"".join(
        b'{"seq": %d, "msg": "some text to fill the line"}\n' % i
        for i in range(first, first + count)
    )


def reader(data: bytes) -> Pread:
    return lambda length, offset: data[offset : offset + length]


def test_a_marker_covers_the_bytes_before_its_end() -> None:
    data = lines(0, 10)
    marker = marker_of(reader(data), 200)
    assert marker is not None and marker.start == 200 - MARKER_BYTES
    assert check_markers([marker], reader(data)) is True
    changed = data[:150] + b"X" + data[151:]
    assert check_markers([marker], reader(changed)) is False
    # Outside the marker's bytes a change goes unnoticed: it checks, it does not hash it all.
    elsewhere = data[:10] + b"X" + data[11:]
    assert check_markers([marker], reader(elsewhere)) is True


def test_markers_past_the_end_say_nothing() -> None:
    data = lines(0, 3)
    marker = marker_of(reader(data), len(data))
    assert marker is not None
    assert check_markers([marker], reader(data[:50])) is None
    assert marker_of(reader(data), len(data) + 1) is None  # bytes not all there
    near_start = marker_of(reader(data), 5)
    assert near_start is not None and near_start.start == 0


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=30))
def test_remember_keeps_the_last_few_increasing_ends(ends: list[int]) -> None:
    kept: tuple[Marker, ...] = ()
    for end in ends:
        kept = remember(kept, Marker(end, "0" * 16))
    assert len(kept) <= MARKERS_KEPT
    assert [m.end for m in kept] == sorted({m.end for m in kept})
    assert kept[-1].end == max(ends)


@contextmanager
def identified(path: Path, known: list[Checkpoint]) -> Iterator[Identified | None]:
    by_inode: dict[tuple[int, int], list[Checkpoint]] = {}
    by_head: dict[str, list[Checkpoint]] = {}
    for checkpoint in known:
        fp = checkpoint.fingerprint
        by_inode.setdefault((fp.dev, fp.ino), []).append(checkpoint)
        by_head.setdefault(fp.head_sha256, []).append(checkpoint)
    found = identify(str(path), fingerprint_bytes=256, candidates=by_inode, by_head=by_head)
    try:
        yield found
    finally:
        if found is not None:
            os.close(found.fd)


def read_up_to(path: Path, offset: int) -> Checkpoint:
    """The checkpoint of a file read up to ``offset``, with the markers reading would leave."""
    with identified(path, []) as found:
        assert found is not None
        data = path.read_bytes()
        markers: tuple[Marker, ...] = ()
        for end in (offset // 2, offset):
            marker = marker_of(reader(data), end)
            assert marker is not None
            markers = remember(markers, marker)
        return Checkpoint(found.fingerprint, "s", str(path), offset, markers=markers)


def rewrite_in_place(path: Path, data: bytes) -> None:
    with path.open("r+b") as f:  # the same inode, as `> file` or copytruncate leave it
        f.truncate(0)
        f.write(data)


def test_a_rewrite_with_the_same_first_line_past_the_offset_is_not_resumed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(BANNER + lines(0, 100))
    checkpoint = read_up_to(path, len(BANNER + lines(0, 50)))
    # Rewritten while we were away: the same banner, other lines, and longer than before.
    rewrite_in_place(path, BANNER + lines(1000, 200))
    with identified(path, [checkpoint]) as found:
        assert found is not None and found.known is None and found.rewritten
        assert found.fingerprint.generation == 1
    # Untouched, or only grown, it resumes where it was.
    path.write_bytes(BANNER + lines(0, 100))
    with identified(path, [checkpoint]) as found:
        assert found is not None and found.known is checkpoint


def test_a_copy_on_another_inode_continues_its_original(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines(0, 100))
    checkpoint = read_up_to(path, len(lines(0, 60)))
    copy = tmp_path / "app.log.1"
    shutil.copyfile(path, copy)  # copytruncate's copy: a new inode with the same bytes
    with identified(copy, [checkpoint]) as found:
        assert found is not None and found.known is None
        assert found.copy_of is checkpoint
        assert found.fingerprint.id != checkpoint.fingerprint.id


def test_same_first_line_elsewhere_is_not_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(BANNER + lines(0, 100))
    checkpoint = read_up_to(path, len(BANNER + lines(0, 60)))
    other = tmp_path / "other.log"
    other.write_bytes(BANNER + lines(5000, 100))  # the same banner, other lines
    with identified(other, [checkpoint]) as found:
        assert found is not None and found.copy_of is None
    short = tmp_path / "short.log"
    short.write_bytes(BANNER + lines(7000, 3))  # too short to check, other bytes: new
    with identified(short, [checkpoint]) as found:
        assert found is not None and found.copy_of is None
    unmarked = Checkpoint(checkpoint.fingerprint, "s", str(path), checkpoint.offset)
    with identified(other, [unmarked]) as found:
        assert found is not None and found.copy_of is None


def test_a_copy_still_being_written_is_a_copy_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines(0, 100))
    checkpoint = read_up_to(path, len(lines(0, 90)))
    copy = tmp_path / "app.log.1"
    copy.write_bytes(lines(0, 100)[:1000])  # shorter than the markers, the same bytes
    with identified(copy, [checkpoint]) as found:
        assert found is not None and found.copy_of is checkpoint and found.copy_in_progress
    path.unlink()  # no original left to compare with: a new file after all
    with identified(copy, [checkpoint]) as found:
        assert found is not None and found.copy_of is None


def test_a_first_line_alone_is_never_a_copy_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(BANNER + lines(0, 100))
    checkpoint = read_up_to(path, len(BANNER + lines(0, 90)))
    new = tmp_path / "other.log"
    new.write_bytes(BANNER)  # a service writing the same banner, nothing else yet
    with identified(new, [checkpoint]) as found:
        assert found is not None and found.copy_of is None
    new.write_bytes(BANNER + lines(0, 1) + b'{"seq": 777}\n')  # the same start, then not
    with identified(new, [checkpoint]) as found:
        assert found is not None and found.copy_of is None


@contextmanager
def found_together(*paths: Path) -> Iterator[list[Identified]]:
    """Each path identified as a never-seen file, as one scan finds them."""
    found = []
    try:
        for path in paths:
            one = identify(str(path), fingerprint_bytes=256, candidates={})
            assert one is not None
            found.append(one)
        yield found
    finally:
        for one in found:
            os.close(one.fd)


def test_a_file_and_its_copy_found_together_are_one_file(tmp_path: Path) -> None:
    # copytruncate under way when the daemon first looks: the copy is taken, the
    # original not yet truncated and still written to.
    path = tmp_path / "app.log"
    path.write_bytes(lines(0, 100))
    copy = tmp_path / "app.log.1"
    shutil.copyfile(path, copy)
    with path.open("ab") as f:
        f.write(lines(100, 5))
    with found_together(copy, path) as (found_copy, found_path):
        assert copies_found_together([found_copy, found_path]) == [(found_copy, found_path)]
    # Not yet written to since the copy: the same size, the file changed first is
    # the original (the copy is written after its last write).
    path.write_bytes(lines(0, 100))
    deadline = time.monotonic() + 10
    shutil.copyfile(path, copy)
    # The file system's clock is coarse: copy again until the copy's change time is later.
    while copy.stat().st_ctime_ns <= path.stat().st_ctime_ns:
        assert time.monotonic() < deadline, "the change time never moved"
        shutil.copyfile(path, copy)
    with found_together(copy, path) as (found_copy, found_path):
        assert copies_found_together([found_copy, found_path]) == [(found_copy, found_path)]


def test_files_that_only_start_alike_are_not_copies(tmp_path: Path) -> None:
    one = tmp_path / "one.log"
    one.write_bytes(BANNER + lines(0, 100))
    other = tmp_path / "other.log"
    other.write_bytes(BANNER + lines(5000, 50))  # the same banner, other lines
    banner = tmp_path / "banner.log"
    banner.write_bytes(BANNER)  # the same banner alone says nothing
    with found_together(one, other, banner) as found:
        assert copies_found_together(found) == []


def test_a_paired_copy_is_a_copy_while_its_original_can_tell(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(lines(0, 100))
    checkpoint = read_up_to(path, len(lines(0, 100)))
    copy_bytes = lines(0, 60)
    assert still_a_copy(checkpoint, reader(copy_bytes), len(copy_bytes)) is True
    other = lines(0, 59) + b'{"seq": 777}\n'
    assert still_a_copy(checkpoint, reader(other), len(other)) is False
    rewrite_in_place(path, lines(500, 100))  # truncated and written again: cannot tell
    assert still_a_copy(checkpoint, reader(copy_bytes), len(copy_bytes)) is None
    path.unlink()
    assert still_a_copy(checkpoint, reader(copy_bytes), len(copy_bytes)) is None
