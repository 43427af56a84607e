"""Many small files share objects: each object says which byte ranges of which files it holds."""

from __future__ import annotations

import itertools
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from shipper.state.statedb import read_state
from tests.e2e_harness import Shipping
from tests.support.producers import start_writer, wait_writer
from tests.support.store import s3_keys, wait_for

pytestmark = pytest.mark.e2e

FILES = 60
LINES_PER_FILE = 4


def ranges_in(metadata: dict[str, str]) -> list[tuple[str, int, int, int]]:
    """``(fingerprint, start, end, lines)`` of every file range an object holds."""
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


def test_small_files_are_packed_and_every_range_is_accounted_for(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store)
    seq = 0
    for n in range(FILES):
        with (shipping.logs / f"svc-{n:03d}.log").open("w") as f:
            for _ in range(LINES_PER_FILE):
                f.write(f'{{"seq": {seq}, "msg": "one of many small files"}}\n')
                seq += 1
    shipping.daemon.start()
    shipping.finish(seq)

    client, bucket = store["seaweed"].client(), store["bucket"]
    heads = [client.head_object(Bucket=bucket, Key=k)["Metadata"] for k in s3_keys(client, bucket)]
    packed = [m for m in heads if "shipper-segments" in m]
    assert packed, "no object holds more than one file"
    assert len(heads) < FILES, f"{len(heads)} objects for {FILES} files"
    by_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for metadata in heads:
        ranges = ranges_in(metadata)
        if len(ranges) > 1:
            assert int(metadata["shipper-files"]) == len(ranges)
        # The first file's fields are those of the first range; the lines add up.
        first = ranges[0]
        assert (first[0], first[1], first[2]) == (
            metadata["shipper-fingerprint"],
            int(metadata["shipper-start"]),
            int(metadata["shipper-end"]),
        )
        assert sum(r[3] for r in ranges) == int(metadata["shipper-lines"])
        assert urllib.parse.unquote(metadata["shipper-path"]).startswith(str(shipping.logs))
        for fid, start, end, _ in ranges:
            by_file[fid].append((start, end))

    # Every file's bytes are in the objects once: the ranges tile [0, size).
    checkpoints = read_state(shipping.state).checkpoints
    sizes = {fid: Path(c.path).stat().st_size for fid, c in checkpoints.items()}
    assert set(by_file) == set(sizes)
    for fid, spans in by_file.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == sizes[fid], (fid, spans)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), (fid, spans)


def test_damaged_entries_of_several_files_are_read_again_from_every_file(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store)
    files = [shipping.logs / f"svc-{n:03d}.log" for n in range(FILES)]
    seq = 0
    for path in files:
        with path.open("w") as f:
            for _ in range(LINES_PER_FILE):
                f.write(f'{{"seq": {seq}, "msg": "one of many small files"}}\n')
                seq += 1
    spool = shipping.state / "spool"
    seaweed = store["seaweed"]

    def checkpointed_to_the_end() -> bool:
        offsets = sorted(c.offset for c in read_state(shipping.state).checkpoints.values())
        return offsets == sorted(f.stat().st_size for f in files)

    seaweed.stop()
    try:
        with shipping.daemon:
            wait_for(checkpointed_to_the_end, 60, message="every file sealed and checkpointed")
            shipping.daemon.kill9()
        # Entries of several files end in -<files>.entry: damage each one's header.
        packed = [p for p in spool.glob("*.entry") if p.name.count("-") == 4]
        assert len(packed) >= 2, sorted(p.name for p in spool.glob("*.entry"))
        for entry in packed:
            data = bytearray(entry.read_bytes())
            data[30] ^= 0x01
            entry.write_bytes(bytes(data))
        # While stopped, one file rotated out of the globs.
        files[0].rename(shipping.logs / "svc-000.log.1")
    finally:
        seaweed.start()
    with shipping.daemon:
        shipping.finish(seq)
    log = shipping.daemon.log_text()
    assert log.count("its lines were read again from the file") == len(packed)
    assert "are lost" not in log


SLOW_FILES = 10
SLOW_SECONDS = 20


@pytest.mark.timeout(300)
def test_slow_files_of_a_source_share_one_object_per_window(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # The default batch settings: a line waits at most 5 s, however slow its file.
    shipping = Shipping(tmp_path, **store, batch_max_bytes="8MiB", batch_max_age_secs=5.0)
    with shipping.daemon:
        shipping.wait_started()
        writers = []
        for n in range(SLOW_FILES):
            # Each file starts a little after the one before: per-file windows would
            # close at ten different moments.
            writers.append(
                start_writer(
                    shipping.logs / f"slow-{n}.log", n * SLOW_SECONDS, SLOW_SECONDS, rate=1.0
                )
            )
            time.sleep(0.45)
        for writer in writers:
            wait_writer(writer, timeout=SLOW_SECONDS + 60)
        shipping.finish(SLOW_FILES * SLOW_SECONDS)
    client, bucket = store["seaweed"].client(), store["bucket"]
    keys = s3_keys(client, bucket)
    # 20 s of lines in 5-s windows: 4 or 5 windows, and the last batch cut at the stop.
    assert len(keys) <= 6, f"{len(keys)} objects for {SLOW_FILES} files over {SLOW_SECONDS} s"
    ranges = [ranges_in(client.head_object(Bucket=bucket, Key=k)["Metadata"]) for k in keys]
    assert sum(len(r) for r in ranges) >= SLOW_FILES  # each file is in some object
