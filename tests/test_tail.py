import hashlib
import os
from pathlib import Path

from shipper.sources.checkpoints import Checkpoint
from shipper.sources.fingerprint import Fingerprint, head_of
from shipper.sources.identify import end_of_last_line, identify
from shipper.sources.tail import FileTailer


def open_tailer(path: Path, chunk: int = 8, offset: int = 0) -> FileTailer:
    fd = os.open(path, os.O_RDONLY)
    fp = Fingerprint(dev=0, ino=0, head_len=1, head_sha256="")
    return FileTailer(
        source="s", path=str(path), fd=fd, fingerprint=fp, offset=offset, chunk_bytes=chunk
    )


def read_all(tailer: FileTailer) -> tuple[list[bytes], list[int]]:
    lines: list[bytes] = []
    ends: list[int] = []
    while (chunk := tailer.read()) is not None:
        lines += chunk.lines
        ends += chunk.ends
    return lines, ends


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
    assert (partial.lines, partial.ends, partial.partial_index) == ([b"next"], [39], 0)
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
