"""Reading rotated files back from their compressed copies, by decompressed offsets."""

import bz2
import gzip
import lzma
import os
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.files.markers import marker_of
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import find_compressed
from shipper.tail.decompress import DecompressedStream, is_compressed
from shipper.tail.identify import identify

DATA = b"".join(b'{"seq": %d, "msg": "some words"}\n' % i for i in range(20_000))
COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.fixture(params=sorted(COMPRESS))
def compressed(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    suffix: str = request.param
    path = tmp_path / f"app.log.1{suffix}"
    path.write_bytes(COMPRESS[suffix](DATA))
    return path


def test_reads_at_decompressed_offsets_forward_and_back(compressed: Path) -> None:
    stream = DecompressedStream(str(compressed))
    try:
        for offset, length in [
            (0, 10),
            (5000, 300),
            (200_000, 1 << 16),
            (100, 50),
            (len(DATA) - 5, 99),
        ]:
            assert stream.pread(length, offset) == DATA[offset : offset + length]
        assert stream.pread(10, len(DATA) + 10) == b""
        assert stream.damage is None
    finally:
        stream.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(DATA) + 100), st.integers(0, 5000)), max_size=8))
def test_any_sequence_of_reads_matches_the_plain_bytes(
    tmp_path_factory: pytest.TempPathFactory, reads: list[tuple[int, int]]
) -> None:
    path = tmp_path_factory.mktemp("gz") / "a.log.gz"
    path.write_bytes(gzip.compress(DATA))
    stream = DecompressedStream(str(path))
    try:
        for offset, length in reads:
            assert stream.pread(length, offset) == DATA[offset : offset + length]
    finally:
        stream.close()


def test_a_damaged_stream_reads_as_ended_and_says_why(compressed: Path) -> None:
    whole = compressed.read_bytes()
    compressed.write_bytes(whole[: len(whole) // 2])  # cut short, as a full disk would leave it
    stream = DecompressedStream(str(compressed))
    try:
        read = b""
        while chunk := stream.pread(65536, len(read)):
            read += chunk
        # (Half a bzip2 file may hold no complete block, so nothing at all.)
        assert DATA.startswith(read) and len(read) < len(DATA)
        assert stream.damage is not None and "EOFError" in stream.damage
    finally:
        stream.close()


def test_zstd_frames_one_after_another_are_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.log.zst"
    compressor = zstandard.ZstdCompressor()
    path.write_bytes(compressor.compress(DATA[:1000]) + compressor.compress(DATA[1000:]))
    stream = DecompressedStream(str(path))
    try:
        assert stream.pread(len(DATA) + 1, 0) == DATA
        assert stream.pread(100, 950) == DATA[950:1050]
        assert stream.damage is None
    finally:
        stream.close()


def test_compressed_names() -> None:
    assert is_compressed("/var/log/app.log.2.gz") and is_compressed("a.zst")
    assert not is_compressed("/var/log/app.log.1") and not is_compressed("gz.log")


def checkpoint_of(path: Path, offset: int) -> Checkpoint:
    found = identify(str(path), fingerprint_bytes=256, candidates={})
    assert found is not None
    os.close(found.fd)
    data = path.read_bytes()
    marker = marker_of(lambda n, o: data[o : o + n], offset)
    assert marker is not None
    return Checkpoint(found.fingerprint, "app", str(path), offset, markers=(marker,))


def test_find_compressed_matches_by_first_line_and_markers(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = logs / "app.log"
    plain.write_bytes(DATA)
    wanted = checkpoint_of(plain, 400_000)
    # The same first line, other bytes at the marker: not it.
    impostor = DATA[: 400_000 - 30] + b"X" * 30 + DATA[400_000:]
    (logs / "app.log.2.gz").write_bytes(gzip.compress(impostor))
    (logs / "other.log.gz").write_bytes(gzip.compress(b"something else\n"))
    (logs / "app.log.3.gz").write_bytes(gzip.compress(DATA))
    plain.unlink()
    found = find_compressed([logs], [wanted])
    try:
        assert [(Path(s.path).name, c) for s, c in found] == [("app.log.3.gz", wanted)]
    finally:
        for stream, _ in found:
            stream.close()


def test_corrupt_bytes_in_any_place_never_raise(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(DATA))
    path = tmp_path / "app.log.1.gz"
    for position in range(20, len(whole) - 8, len(whole) // 40):
        damaged = bytearray(whole)
        damaged[position] ^= 0xFF
        path.write_bytes(damaged)
        stream = DecompressedStream(str(path))
        try:
            read = b""
            while chunk := stream.pread(65536, len(read)):
                read += chunk
            # gzip's CRC catches what the decoder does not: damage is always said.
            assert read == DATA or stream.damage is not None
        finally:
            stream.close()


def test_a_shorter_file_with_the_same_first_line_is_not_the_one(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    plain = logs / "app.log"
    plain.write_bytes(DATA)
    marked = checkpoint_of(plain, 400_000)
    unmarked = Checkpoint(marked.fingerprint, "app", str(plain), 400_000)
    (logs / "app.log.1.gz").write_bytes(gzip.compress(DATA[:300_000]))  # starts the same
    for wanted in (marked, unmarked):
        found = find_compressed([logs], [wanted])
        for stream, _ in found:
            stream.close()
        assert found == []
