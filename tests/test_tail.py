import hashlib
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.files.fingerprint import Fingerprint, head_of
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.identify import end_of_last_line, identify
from shipper.tail.tailer import FileTailer


def open_tailer(path: Path, chunk: int = 8, offset: int = 0, max_line: int = 1 << 20) -> FileTailer:
    fd = os.open(path, os.O_RDONLY)
    fp = Fingerprint(dev=0, ino=0, head_len=1, head_sha256="")
    return FileTailer(
        source="s",
        path=str(path),
        fd=fd,
        fingerprint=fp,
        offset=offset,
        chunk_bytes=chunk,
        max_line_bytes=max_line,
    )


def read_all(tailer: FileTailer) -> tuple[list[bytes], list[int]]:
    lines, ends, _ = read_flagged(tailer)
    return lines, ends


def read_flagged(tailer: FileTailer) -> tuple[list[bytes], list[int], dict[int, tuple[str, ...]]]:
    lines: list[bytes] = []
    ends: list[int] = []
    flags: dict[int, tuple[str, ...]] = {}
    while (chunk := tailer.read()) is not None:
        flags.update({len(lines) + i: f for i, f in chunk.flags.items()})
        lines += chunk.lines
        ends += chunk.ends
    return lines, ends, flags


def test_lines_split_across_small_chunks_with_exact_end_offsets(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"alpha\nbe\n\ngamma-long-line\ntail")
    tailer = open_tailer(path, chunk=4)
    lines, ends = read_all(tailer)
    assert lines == [b"alpha", b"be", b"", b"gamma-long-line"]
    assert ends == [6, 9, 10, 26]
    assert tailer.offset == 26 and tailer.read_position == 30
    # The partial line is held until its newline arrives...
    with path.open("ab") as f:
        f.write(b"-end\nnext")
    lines, ends = read_all(tailer)
    assert lines == [b"tail-end"] and ends == [35]
    # ...or handed out flagged when the file is finished.
    partial = tailer.take_partial()
    assert partial is not None
    assert (partial.lines, partial.ends, partial.flags) == ([b"next"], [39], {0: ("partial",)})
    assert tailer.take_partial() is None
    tailer.close()


def test_resumes_from_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthree\n")
    lines, ends = read_all(open_tailer(path, chunk=1024, offset=4))
    assert (lines, ends) == ([b"two", b"three"], [8, 14])


def test_head_waits_for_a_complete_first_line() -> None:
    assert head_of(b"partial", 16) is None
    assert head_of(b"line\nmore", 16) == b"line\n"
    assert head_of(b"x" * 20, 16) == b"x" * 16


def test_identify_matches_known_file_by_inode_and_head(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b'{"seq": 1}\n{"seq": 2}\n')
    new = identify(str(path), fingerprint_bytes=256, candidates={})
    assert new is not None and new.known is None
    os.close(new.fd)
    st = path.stat()
    assert (new.fingerprint.dev, new.fingerprint.ino) == (st.st_dev, st.st_ino)
    assert new.fingerprint.head_sha256 == hashlib.sha256(b'{"seq": 1}\n').hexdigest()
    checkpoint = Checkpoint(new.fingerprint, "s", str(path), 11)
    again = identify(
        str(path), fingerprint_bytes=64, candidates={(st.st_dev, st.st_ino): [checkpoint]}
    )
    assert again is not None and again.known is checkpoint
    os.close(again.fd)


def test_identify_rejects_a_rewritten_file_on_the_same_inode(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b'{"seq": 1}\n')
    first = identify(str(path), fingerprint_bytes=256, candidates={})
    assert first is not None
    os.close(first.fd)
    with path.open("r+b") as f:  # truncate and rewrite in place: same inode
        f.truncate(0)
        f.write(b'{"seq": 9}\n')
    st = path.stat()
    checkpoint = Checkpoint(first.fingerprint, "s", str(path), 11)
    second = identify(
        str(path), fingerprint_bytes=256, candidates={(st.st_dev, st.st_ino): [checkpoint]}
    )
    assert second is not None and second.known is None
    assert second.fingerprint.id != first.fingerprint.id
    os.close(second.fd)


def test_identify_waits_while_the_first_line_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b'{"seq": ')
    assert identify(str(path), fingerprint_bytes=256, candidates={}) is None


def test_end_of_last_line_skips_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"a\n" + b"b" * 100 + b"\npartial")
    fd = os.open(path, os.O_RDONLY)
    assert end_of_last_line(fd, path.stat().st_size, block=7) == 103
    os.close(fd)
    path.write_bytes(b"no newline at all")
    fd = os.open(path, os.O_RDONLY)
    assert end_of_last_line(fd, path.stat().st_size, block=4) == 0
    os.close(fd)


@pytest.mark.parametrize("chunk", [3, 7, 64, 4096])
def test_overlong_lines_are_cut_and_the_rest_skipped(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"short\n" + b"x" * 100 + b"\nok\n" + b"y" * 30 + b"\n" + b"z" * 40)
    tailer = open_tailer(path, chunk=chunk, max_line=16)
    lines, ends, flags = read_flagged(tailer)
    assert lines == [b"short", b"x" * 16, b"ok", b"y" * 16]
    assert ends == [6, 107, 110, 141]
    assert flags == {1: ("truncated",), 3: ("truncated",)}
    assert tailer.read_position == 181  # the unfinished z-line is consumed, only 16 kept
    partial = tailer.take_partial()
    assert partial is not None
    assert (partial.lines, partial.ends) == ([b"z" * 16], [181])
    assert partial.flags == {0: ("truncated", "partial")}


def test_a_50_mb_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    with path.open("wb") as f:
        f.write(b'{"seq": 0}\n')
        f.write(b"a" * (50 << 20) + b"\n")
        f.write(b'{"seq": 2}\n')
    tailer = open_tailer(path, chunk=1 << 20, max_line=1 << 20)
    held = 0
    lines: list[bytes] = []
    while (chunk := tailer.read()) is not None:
        held = max(held, len(tailer._pending))
        lines += chunk.lines
    assert [len(x) for x in lines] == [10, 1 << 20, 10]
    assert held <= 1 << 20


@given(
    st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b".")), max_size=30),
    st.integers(1, 50),
    st.integers(1, 40),
    st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_any_lines_any_chunks_any_limit(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    chunk: int,
    limit: int,
    unterminated: bool,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "a.log"
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(data + (b"tail-without-newline" if unterminated else b""))
    tailer = open_tailer(path, chunk=chunk, max_line=limit)
    got, ends, flags = read_flagged(tailer)
    assert got == [line[:limit] for line in lines]
    assert ends == list(itertools.accumulate(len(line) + 1 for line in lines))
    assert set(flags) == {i for i, line in enumerate(lines) if len(line) > limit}
    partial = tailer.take_partial()
    if unterminated:
        assert partial is not None
        assert partial.lines == [b"tail-without-newline"[:limit]]
        assert partial.ends == [path.stat().st_size]
    else:
        assert partial is None
    tailer.close()
