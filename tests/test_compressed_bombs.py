"""Compression bombs in the logs directory: bounded reads, refused past a ratio, never deleted."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import zstandard

from shipper.errors import DecompressionRefusedError
from shipper.files.fingerprint import Fingerprint, head_of
from shipper.files.markers import marker_of
from shipper.housekeeping.retention import (
    DiskUsage,
    RotatedFile,
    StreamFacts,
    choose,
    measure_loss,
    read_stream,
    survey,
)
from shipper.state.delivered import ShippedIndex
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.compressed import CompressedFileTailer, RefusedFiles, find_compressed
from shipper.tail.decompress import (
    DECODER_MEMORY_BYTES,
    MAX_EXPANSION_RATIO,
    RATIO_CHECKED_AFTER_BYTES,
    DecompressedStream,
    Refusal,
    check_expansion,
)
from tests.support.bombs import write_bomb

CODECS = (".gz", ".bz2", ".xz", ".zst")
#: Far past the point where a bomb is refused, and quick to write with every codec.
BOMB_BYTES = 32 << 20


def log_lines(first: int, count: int) -> bytes:
    """Lines as varied as a real log's: they compress about as well."""
    return b"".join(
        orjson.dumps(
            {
                "ts": f"2026-01-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq * 7919 % 1000:03d}Z",
                "seq": seq,
                "level": "INFO",
                "request_id": hashlib.sha256(b"%d" % seq).hexdigest()[:16],
                "message": "served GET /api/items",
                "duration_ms": seq * 31 % 997,
            }
        )
        + b"\n"
        for seq in range(first, first + count)
    )


def compress(suffix: str, data: bytes) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data, compresslevel=9)
    if suffix == ".bz2":
        return bz2.compress(data, 9)
    if suffix == ".xz":
        return lzma.compress(data, preset=1)
    return zstandard.ZstdCompressor(level=3).compress(data)


def read_through(path: Path, piece: int = 1 << 20) -> tuple[bytes, DecompressedStream]:
    stream = DecompressedStream(str(path))
    parts: list[bytes] = []
    while data := stream.pread(piece, sum(len(p) for p in parts)):
        parts.append(data)
    stream.close()
    return b"".join(parts), stream


# ------------------------------------------------------------------ the limit


def test_the_ratio_is_judged_only_past_a_few_mib() -> None:
    check_expansion(1, RATIO_CHECKED_AFTER_BYTES)  # any ratio, while small
    check_expansion(1 << 20, MAX_EXPANSION_RATIO << 20)  # at the limit, not past it
    with pytest.raises(DecompressionRefusedError) as refused:
        check_expansion(1 << 20, (MAX_EXPANSION_RATIO << 20) + 1)
    assert (refused.value.compressed, refused.value.decompressed) == (
        1 << 20,
        (MAX_EXPANSION_RATIO << 20) + 1,
    )
    with pytest.raises(DecompressionRefusedError):
        check_expansion(0, RATIO_CHECKED_AFTER_BYTES + 1)


@pytest.mark.parametrize("suffix", CODECS)
def test_a_bomb_is_refused_with_how_far_it_was_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"app.log.3{suffix}"
    write_bomb(path, BOMB_BYTES)
    data, stream = read_through(path)
    refusal = stream.refused
    assert refusal is not None and stream.damage is None
    assert "expands more than" in refusal.reason
    # Refused soon after the ratio starts to count: a bomb's zeros are never all read.
    assert RATIO_CHECKED_AFTER_BYTES < refusal.decompressed_offset <= 4 * RATIO_CHECKED_AFTER_BYTES
    assert 0 < refusal.compressed_offset <= path.stat().st_size
    assert refusal.decompressed_offset > MAX_EXPANSION_RATIO * refusal.compressed_offset
    assert data == bytes(len(data)) and len(data) <= refusal.decompressed_offset
    st = path.stat()
    assert refusal.file == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    # Once refused, never decompressed again, from any offset.
    assert stream.pread(10, 0) == b""


@pytest.mark.parametrize("suffix", CODECS)
def test_an_ordinary_log_decompresses_exactly(tmp_path: Path, suffix: str) -> None:
    data = log_lines(0, 40_000)  # past RATIO_CHECKED_AFTER_BYTES
    assert len(data) > RATIO_CHECKED_AFTER_BYTES
    path = tmp_path / f"app.log.1{suffix}"
    path.write_bytes(compress(suffix, data))
    for piece in (1 << 20, 4000):
        read, stream = read_through(path, piece)
        assert read == data
        assert stream.refused is None and stream.damage is None


@pytest.mark.parametrize("suffix", CODECS)
def test_a_small_file_of_identical_lines_is_no_bomb(tmp_path: Path, suffix: str) -> None:
    line = b'{"level": "INFO", "message": "health check ok"}\n'
    data = line * (RATIO_CHECKED_AFTER_BYTES // len(line))  # compresses past any ratio
    path = tmp_path / f"app.log.1{suffix}"
    path.write_bytes(compress(suffix, data))
    read, stream = read_through(path)
    assert read == data and stream.refused is None


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")
def test_the_zstd_command_line_tool_output_is_read_whole(tmp_path: Path) -> None:
    """Frames with and without checksums and sizes, several of them, and a skippable
    one: none is taken for a frame cut short, and a real cut still is."""
    data = log_lines(0, 10_000)
    plain = tmp_path / "app.log.1"
    plain.write_bytes(data)
    frames = []
    for options in (["-3"], ["-9", "--no-check"], ["-3", "--long=27"]):
        out = tmp_path / "out.zst"
        subprocess.run(["zstd", "-q", "-f", *options, str(plain), "-o", str(out)], check=True)
        frames.append(out.read_bytes())
    streamed = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    frames.append(streamed.compress(data))
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    path = tmp_path / "app.log.1.zst"
    path.write_bytes(frames[0] + skippable + b"".join(frames[1:]))
    read, stream = read_through(path, 70_000)
    assert read == data * 4 and stream.damage is None and stream.refused is None

    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) - 3, len(frames[0]) + 3):
        path.write_bytes(whole[:cut])
        read, stream = read_through(path)
        assert (data * 4).startswith(read)
        assert stream.damage is not None and "cut short" in stream.damage


def test_a_decoder_needing_too_much_memory_is_refused(tmp_path: Path) -> None:
    data = log_lines(0, 1000)
    xz = tmp_path / "app.log.1.xz"
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 30}]  # asks for 1 GiB
    xz.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters))
    zst = tmp_path / "app.log.2.zst"
    write_bomb(zst, 1 << 20, prefix=data, window_log=DECODER_MEMORY_BYTES.bit_length())
    for path in (xz, zst):
        read, stream = read_through(path)
        assert read == b"" and stream.refused is not None
        assert "MiB to decompress" in stream.refused.reason
        assert stream.refused.decompressed_offset == 0


# ------------------------------------------- a bomb behind a known file's lines


def known_file(path: Path, data: bytes, offset: int) -> Checkpoint:
    """The checkpoint of ``path``, read up to ``offset`` of ``data``."""
    head = head_of(data[:256], 256)
    assert head is not None
    st = path.stat()
    marker = marker_of(lambda n, at: data[at : at + n], offset)
    assert marker is not None
    fingerprint = Fingerprint(st.st_dev, st.st_ino, len(head), hashlib.sha256(head).hexdigest())
    return Checkpoint(fingerprint, "app", str(path), offset, markers=(marker,))


def test_a_rotation_ending_in_a_bomb_is_read_up_to_it(tmp_path: Path) -> None:
    lines = log_lines(0, 5000)
    original = tmp_path / "app.log"
    original.write_bytes(lines)
    read_up_to = len(log_lines(0, 2000))
    checkpoint = known_file(original, lines, read_up_to)
    original.unlink()
    bomb = tmp_path / "app.log.1.zst"
    write_bomb(bomb, 1 << 30, prefix=lines)
    [(stream, matched)] = find_compressed([tmp_path], [checkpoint])
    assert matched is checkpoint
    tailer = CompressedFileTailer(
        stream=stream,
        source="app",
        path=str(bomb),
        fingerprint=checkpoint.fingerprint,
        offset=read_up_to,
        chunk_bytes=1 << 20,
        max_line_bytes=1 << 20,
    )
    shipped = []
    while (chunk := tailer.read()) is not None:
        shipped += chunk.lines
    assert shipped == lines[read_up_to:].splitlines()
    assert stream.refused is not None
    # The zeros the refusal cut are not a last line to ship.
    assert tailer.take_partial() is None
    assert tailer.offset == len(lines)
    tailer.close()


def test_a_bomb_refused_while_being_matched_is_reported(tmp_path: Path) -> None:
    lines = log_lines(0, 200)
    original = tmp_path / "app.log"
    original.write_bytes(lines)
    # A file read far (its last marker deep in zeros): the bomb would match it, were
    # it read that far.
    content = lines + bytes(BOMB_BYTES)
    checkpoint = known_file(original, content, len(content))
    original.unlink()
    write_bomb(tmp_path / "app.log.1.gz", BOMB_BYTES, prefix=lines)
    refused: list[tuple[str, Refusal]] = []
    assert find_compressed([tmp_path], [checkpoint], refused) == []
    [(path, refusal)] = refused
    assert path.endswith("app.log.1.gz") and refusal.decompressed_offset > len(lines)


# ----------------------------------------------------------- retention's survey


def test_the_survey_reads_no_compressed_file_unless_told_to(tmp_path: Path) -> None:
    bomb = tmp_path / "app.log.3.zst"
    write_bomb(bomb, 1 << 30)
    streams: dict[tuple[int, int, int, int], StreamFacts] = {}

    def run(decompress: bool) -> list[RotatedFile]:
        return survey(
            [("app", str(bomb))],
            known={},
            index=ShippedIndex(),
            live=set(),
            open_files={},
            streams=streams,
            bases={"app": [str(tmp_path)]},
            decompress=decompress,
        )

    assert run(False) == [] and streams == {}
    [found] = run(True)
    assert found.refused is not None and not found.shipped
    assert len(streams) == 1  # what it found is kept: not decompressed again next pass
    facts = read_stream(str(bomb), 256)
    assert facts.refused is not None and facts.length <= facts.refused.decompressed_offset


def rotated_file(name: str, *, refused: bool, shipped: bool) -> RotatedFile:
    return RotatedFile(
        path=f"/logs/{name}",
        source="app",
        dev=1,
        ino=hash(name) & 0xFFFF,
        size=1000,
        mtime=0.0,
        mtime_ns=0,
        disk_bytes=1000,
        compressed=True,
        open=False,
        fingerprint=None,
        length=1000,
        shipped=shipped,
        refused=Refusal("expands", 10, 10_000_000, (1, 1, 1000, 0)) if refused else None,
    )


def test_a_refused_file_is_never_chosen_for_deletion() -> None:
    bomb = rotated_file("app.log.3.zst", refused=True, shipped=False)
    other = rotated_file("app.log.2.gz", refused=False, shipped=False)
    plan = choose(
        [bomb, other],
        {1: DiskUsage("/logs", 99, 1)},  # far above every watermark
        now=1e9,
        max_age_secs=1.0,
        max_total_bytes=1,
        high_watermark=0.5,
        critical_watermark=0.6,
        delete_unshipped=True,
        quiet_secs={},
    )
    assert [d.file.path for d in plan.deletions] == ["/logs/app.log.2.gz"]


def test_the_loss_of_a_refused_file_cannot_be_measured(tmp_path: Path) -> None:
    bomb = tmp_path / "app.log.4.gz"
    prefix = log_lines(0, 10)
    write_bomb(bomb, BOMB_BYTES, prefix=prefix)
    # As a survey that did not refuse it (a limit raised since) would have left it.
    judged = rotated_file("x", refused=False, shipped=False)
    file = replace(judged, path=str(bomb), length=len(prefix) + BOMB_BYTES)
    fd = os.open(bomb, os.O_RDONLY)
    try:
        with pytest.raises(DecompressionRefusedError):
            measure_loss(file, [], fd)
    finally:
        os.close(fd)


def test_each_refused_file_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    counters: Counter[str] = Counter()
    refused = RefusedFiles(counters)
    refusal = Refusal("expands more than 700x", 8192, 6 << 20, (1, 2, 32768, 5))
    with caplog.at_level(logging.ERROR):
        refused.report("/logs/app.log.3.zst", refusal, found_by="disk guard")
        refused.report("/logs/app.log.3.zst", refusal)  # the reader, the next pass, ...
        changed = Refusal("expands more than 700x", 8192, 6 << 20, (1, 2, 40000, 6))
        refused.report("/logs/app.log.3.zst", changed)  # written again: another file
    assert counters["compressed_refused"] == 2
    [first, _] = caplog.records
    assert first.levelno == logging.ERROR
    assert first.path == "/logs/app.log.3.zst"  # type: ignore[attr-defined]
    assert first.compressed_offset == 8192  # type: ignore[attr-defined]
    assert first.decompressed_offset == 6 << 20  # type: ignore[attr-defined]
