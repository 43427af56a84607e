"""The span list an object of several files ends with: decoders skip it, and it reads
back as the ranges sealed, or fails with a typed error."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from shipper.batch.provenance import (
    SPANS_FORMAT,
    SPANS_MAGIC,
    SpanRecord,
    read_spans_trailer,
    spans_trailer,
)
from shipper.batch.segment import Segment
from shipper.errors import SpansError
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker

NDJSON = b"".join(b'{"seq": %d, "msg": "hello"}\n' % n for n in range(50))


def segment(ino: int, path: str, start: int, end: int, lines: int) -> Segment:
    fp = Fingerprint(dev=1, ino=ino, head_len=20, head_sha256=f"{ino:064x}")
    return Segment(fp, path, start, end, lines, end_marker=Marker(end, f"{ino:016x}"))


SEGMENTS = (
    segment(1, "/var/log/app/a.log", 0, 540, 20),
    segment(2, "/var/log/app/b \u00e9\n.log", 100, 910, 30),
)


def test_the_span_list_reads_back_as_the_segments() -> None:
    assert read_spans_trailer(spans_trailer(SEGMENTS)) == [
        SpanRecord(s.fingerprint.id, s.path, s.start, s.end, s.lines, s.end_marker.digest)  # type: ignore[union-attr]
        for s in SEGMENTS
    ]


def test_it_is_the_same_bytes_every_time() -> None:
    assert spans_trailer(SEGMENTS) == spans_trailer(SEGMENTS)


def test_python_decoders_skip_it_one_shot_or_streaming() -> None:
    obj = zstandard.ZstdCompressor().compress(NDJSON) + spans_trailer(SEGMENTS)
    assert zstandard.ZstdDecompressor().decompress(obj) == NDJSON
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(obj), read_across_frames=True)
    assert reader.read() == NDJSON


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")
def test_the_zstd_command_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "object.ndjson.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(NDJSON) + spans_trailer(SEGMENTS))
    out = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True)
    assert out.stdout == NDJSON


def _frame(payload: bytes, *, magic: int = SPANS_MAGIC, length: int | None = None) -> bytes:
    return struct.pack("<II", magic, len(payload) if length is None else length) + payload


def _document(doc: object) -> bytes:
    return _frame(zstandard.ZstdCompressor().compress(orjson.dumps(doc)))


@pytest.mark.parametrize(
    ("tail", "says"),
    [
        (b"", "shorter than its header"),
        (_frame(b"x", magic=0x184D2A50), "magic 0x184d2a50"),
        (zstandard.ZstdCompressor().compress(NDJSON)[-40:], "magic"),
        (_frame(b"abc", length=10), "says 10 bytes, 3 follow"),
        (_frame(b"not zstd at all"), "unreadable"),
        (_frame(zstandard.ZstdCompressor().compress(b"{not json")), "unreadable"),
        (_document({"format": "other/9", "spans": []}), "unknown format"),
        (_document([1, 2]), "unknown format"),
        (_document({"format": SPANS_FORMAT}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": [["f", "p", 0, 1]]}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": [["f", "p", -1, 1, 1, None]]}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": [["f", 7, 0, 1, 1, None]]}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": [["f", "p", 0, 1, 1, 5]]}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": [["f", "p", 0, True, 1, None]]}), "malformed"),
        (_document({"format": SPANS_FORMAT, "spans": "abc"}), "malformed"),
    ],
)
def test_a_damaged_or_foreign_span_list_is_a_typed_error(tail: bytes, says: str) -> None:
    with pytest.raises(SpansError, match=says):
        read_spans_trailer(tail)


def test_a_span_list_that_would_decompress_huge_is_refused() -> None:
    # A frame without its content size, expanding to more than the cap.
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as writer:
        writer.write(b'{"format": "' + b" " * (65 * 1024 * 1024))
    with pytest.raises(SpansError, match="unreadable"):
        read_spans_trailer(_frame(out.getvalue()))


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=40),
            st.integers(0, 2**40),
            st.integers(0, 2**20),
            st.integers(0, 10**6),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_paths_and_ranges_read_back(spans: list[tuple[str, int, int, int]]) -> None:
    segments = [
        segment(n, path, start, start + length, lines)
        for n, (path, start, length, lines) in enumerate(spans, 1)
    ]
    back = read_spans_trailer(spans_trailer(segments))
    assert [(r.path, r.start, r.end, r.lines) for r in back] == [
        (s.path, s.start, s.end, s.lines) for s in segments
    ]
