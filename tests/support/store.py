"""Read back what the daemon delivered, and compare it with what the writers wrote."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "OBJECT_SUFFIX",
    "assert_exact",
    "decompress",
    "dir_records",
    "dir_seqs",
    "object_ranges",
    "objects_holding",
    "parse_ndjson",
    "s3_keys",
    "s3_records",
    "s3_seqs",
    "spool_file_ends",
    "stored_ranges",
    "wait_for",
]

import gzip
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import zstandard

from shipper.batch.provenance import read_spans_trailer
from shipper.spool.entry import decode_header

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Delivered objects end in one of these (zstd, the default codec, or gzip).
OBJECT_SUFFIX = (".ndjson.zst", ".ndjson.gz")

T = TypeVar("T")


def decompress(data: bytes) -> bytes:
    """All zstd frames (or gzip members) of ``data``, concatenated."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    with reader:
        out = io.BytesIO()
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    return out.getvalue()


def parse_ndjson(data: bytes, where: str = "") -> list[dict[str, Any]]:
    """One JSON object per line; a final newline is allowed, an empty line is not."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(
                f"{where} line {number}: not JSON ({exc}): {line[:200]!r}"
            ) from exc
        if not isinstance(record, dict):
            raise AssertionError(f"{where} line {number}: not a JSON object: {line[:200]!r}")
        records.append(record)
    return records


def s3_keys(client: S3Client, bucket: str, prefix: str = "", *, page_size: int = 1000) -> list[str]:
    """Every key under ``prefix`` ending in ``.ndjson.zst``, in listing order (all pages)."""
    keys: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
    )
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith(OBJECT_SUFFIX):
                keys.append(key)
    return keys


def s3_records(
    client: S3Client, bucket: str, prefix: str = "", *, page_size: int = 1000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, record)`` for every record of every delivered object under ``prefix``."""
    for key in s3_keys(client, bucket, prefix, page_size=page_size):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        where = f"s3://{bucket}/{key}"
        try:
            text = decompress(body)
        except (zstandard.ZstdError, OSError) as exc:
            raise AssertionError(f"{where}: not zstd or gzip: {exc}") from exc
        for record in parse_ndjson(text, where):
            yield key, record


def _is_delivered_file(path: Path, root: Path) -> bool:
    # Temp files (and anything in a hidden staging directory) start with ".".
    relative = path.relative_to(root)
    return path.is_file() and not any(part.startswith(".") for part in relative.parts)


def dir_records(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(path, record)`` for every record of every ``*.ndjson.zst`` under ``root``.

    Files or directories whose names start with ``.`` (temp files) are skipped.
    """
    root = Path(root)
    paths = sorted(
        p for p in root.rglob("*.ndjson.*")
        if p.name.endswith(OBJECT_SUFFIX) and _is_delivered_file(p, root)
    )  # fmt: skip
    for path in paths:
        try:
            text = decompress(path.read_bytes())
        except (zstandard.ZstdError, OSError) as exc:
            raise AssertionError(f"{path}: not zstd or gzip: {exc}") from exc
        for record in parse_ndjson(text, str(path)):
            yield path, record


def _count(records: Iterable[tuple[object, dict[str, Any]]], field: str) -> Counter[int]:
    """Lines delivered, by ``field``; gap records (lines deleted unshipped) are not lines."""
    counts: Counter[int] = Counter()
    for where, record in records:
        if record.get("shipper_gap") is True:
            continue
        value = record.get(field)
        if not isinstance(value, int) or isinstance(value, bool):
            raise AssertionError(f"{where}: record without an integer {field!r}: {record!r}")
        counts[value] += 1
    return counts


def s3_seqs(
    client: S3Client,
    bucket: str,
    prefix: str = "",
    *,
    field: str = "seq",
    page_size: int = 1000,
) -> Counter[int]:
    """How many times each ``seq`` was delivered to ``bucket`` under ``prefix``."""
    return _count(s3_records(client, bucket, prefix, page_size=page_size), field)


def dir_seqs(root: Path, *, field: str = "seq") -> Counter[int]:
    """How many times each ``seq`` was delivered under the local directory ``root``."""
    return _count(dir_records(root), field)


def _runs(seqs: Iterable[int], limit: int) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``; at most ``limit`` runs, then ``...``."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        shown.append(f"... ({len(runs) - limit} more runs)")
    return ", ".join(shown)


def assert_exact(delivered: Counter[int], expected: range, *, show: int = 10) -> None:
    """Every seq of ``expected`` delivered exactly once, and nothing else."""
    missing = [seq for seq in expected if delivered[seq] <= 0]
    duplicated = {seq: n for seq, n in delivered.items() if n > 1 and seq in expected}
    unexpected = {seq: n for seq, n in delivered.items() if n > 0 and seq not in expected}
    if not (missing or duplicated or unexpected):
        return
    total = sum(n for n in delivered.values() if n > 0)
    first_dups = ", ".join(f"{seq} x{duplicated[seq]}" for seq in sorted(duplicated)[:show])
    first_unexpected = ", ".join(f"{seq} x{unexpected[seq]}" for seq in sorted(unexpected)[:show])
    lines = [
        f"delivery is not exact for {expected}: expected {len(expected)} records,"
        f" got {total} records ({len(+delivered)} distinct seqs)",
        f"  missing:    {len(missing)} seqs" + (f": {_runs(missing, show)}" if missing else ""),
        f"  duplicated: {len(duplicated)} seqs ({sum(duplicated.values()) - len(duplicated)}"
        " extra copies)" + (f": {first_dups}" if duplicated else ""),
        f"  unexpected: {len(unexpected)} seqs" + (f": {first_unexpected}" if unexpected else ""),
    ]
    raise AssertionError("\n".join(lines))


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str = "",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions listed in ``ignore`` count as "not yet". After ``timeout`` seconds,
    raises ``AssertionError`` with ``message``, the last value and the last ignored error.
    """
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"last value {last_value!r}"
            if last_error is not None:
                detail += f", last error {last_error!r}"
            raise AssertionError(f"timed out after {timeout}s: {message or predicate!r} ({detail})")
        time.sleep(min(interval, remaining))


def stored_ranges(
    client: S3Client, bucket: str, key: str
) -> tuple[dict[str, str], list[tuple[str, int, int, int]]]:
    """An object's metadata and ``(fingerprint, start, end, lines)`` of every file
    range it holds: from the span list it ends with, read alone by a ranged GET of
    its last ``shipper-spans-bytes``, where it has one (its metadata's list, when
    there is one too, must agree)."""
    metadata = client.head_object(Bucket=bucket, Key=key)["Metadata"]
    spans_bytes = int(metadata.get("shipper-spans-bytes", "0"))
    if not spans_bytes:
        return metadata, object_ranges(metadata)
    got = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{spans_bytes}")
    tail = got["Body"].read()
    assert len(tail) == spans_bytes, (key, len(tail), spans_bytes)
    ranges = [(s.fingerprint, s.start, s.end, s.lines) for s in read_spans_trailer(tail)]
    assert len(ranges) == int(metadata["shipper-files"]), key
    if "shipper-segments" in metadata:
        assert ranges == object_ranges(metadata), key
    return metadata, ranges


def object_ranges(metadata: Mapping[str, str]) -> list[tuple[str, int, int, int]]:
    """``(fingerprint, start, end, lines)`` of every file range an object's metadata
    lists (all of them, up to about 40 files: see :func:`stored_ranges`)."""
    assert "shipper-files" not in metadata or "shipper-segments" in metadata, (
        "the metadata lists only some files: read the span list (stored_ranges)"
    )
    if "shipper-segments" not in metadata:
        return [
            (
                metadata["shipper-fingerprint"],
                int(metadata["shipper-start"]),
                int(metadata["shipper-end"]),
                int(metadata["shipper-lines"]),
            )
        ]
    ranges = []
    for part in metadata["shipper-segments"].split(";"):
        fid, span, lines = part.split(":")
        start, end = span.split("-")
        ranges.append((fid, int(start), int(end), int(lines)))
    return ranges


def objects_holding(
    client: S3Client, bucket: str, prefix: str, seqs: Iterable[int], *, field: str = "seq"
) -> str:
    """Which objects hold any of ``seqs``: each key, the runs of them it holds and its
    span list, one object per line; for a failing test to show where a duplicate came from."""
    wanted = set(seqs)
    lines = []
    for key in s3_keys(client, bucket, prefix):
        held = set()
        for record in parse_ndjson(
            decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        ):
            if record.get(field) in wanted:
                held.add(record[field])
        if held:
            _, ranges = stored_ranges(client, bucket, key)
            lines.append(f"  {key}: {field} {_runs(held, 5)}; spans {ranges}")
    return "\n".join(lines) or "  (no object holds them)"


def spool_file_ends(spool: Path) -> dict[str, int]:
    """The furthest end the spool's entries reach in each file, by fingerprint id,
    from the entries' headers (an entry may hold ranges of several files)."""
    ends: dict[str, int] = {}
    for entry in spool.glob("*.entry"):
        header, _ = decode_header(entry.read_bytes())
        for segment in header["segments"]:
            fid = segment["fingerprint"]["id"]
            ends[fid] = max(ends.get(fid, 0), int(segment["end"]))
    return ends
