"""Many small files share objects: each object says which byte ranges of which files it holds."""

from __future__ import annotations

import itertools
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from shipper.state.statedb import read_state
from tests.e2e_harness import Shipping
from tests.support.producers import start_writer, wait_writer
from tests.support.store import decompress, s3_keys, stored_ranges, wait_for

pytestmark = pytest.mark.e2e

FILES = 60
LINES_PER_FILE = 4


def assert_ranges_tile(store: dict[str, Any], shipping: Shipping) -> int:
    """Every file's bytes are in the objects exactly once: each file's ranges, over all
    objects, tile ``[0, size)``. Returns how many objects hold several files."""
    client, bucket = store["seaweed"].client(), store["bucket"]
    by_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
    packed = 0
    for key in s3_keys(client, bucket):
        metadata, ranges = stored_ranges(client, bucket, key)
        if len(ranges) > 1:
            packed += 1
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
    checkpoints = read_state(shipping.state).checkpoints
    sizes = {fid: Path(c.path).stat().st_size for fid, c in checkpoints.items()}
    assert set(by_file) == set(sizes)
    for fid, spans in by_file.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == sizes[fid], (fid, spans)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), (fid, spans)
    return packed


def assert_provenance(store: dict[str, Any], shipping: Shipping) -> None:
    """Read back every object: each range it names holds, in the file, exactly the
    lines whose records follow one another in the object, in that order."""
    client, bucket = store["seaweed"].client(), store["bucket"]
    paths = {fid: Path(c.path) for fid, c in read_state(shipping.state).checkpoints.items()}
    for key in s3_keys(client, bucket):
        got = client.get_object(Bucket=bucket, Key=key)
        body = got["Body"].read()
        ndjson = decompress(body)
        # A consumer decoding the first frame only gets every line too: the span list
        # an object of several files ends with is a frame decoders skip.
        assert zstandard.ZstdDecompressor().decompress(body) == ndjson, key
        records = [orjson.loads(line) for line in ndjson.splitlines()]
        at = 0
        for fid, start, end, lines in stored_ranges(client, bucket, key)[1]:
            with paths[fid].open("rb") as f:
                f.seek(start)
                in_file = [orjson.loads(line)["seq"] for line in f.read(end - start).splitlines()]
            assert len(in_file) == lines, (key, fid, start, end)
            assert [r["seq"] for r in records[at : at + lines]] == in_file, (key, fid)
            at += lines
        assert at == len(records), key


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

    packed = assert_ranges_tile(store, shipping)
    assert packed, "no object holds more than one file"
    # More files than S3 metadata can list (about 40) still make one object: its span
    # list says which, and the metadata how long that is.
    client, bucket = store["seaweed"].client(), store["bucket"]
    heads = [client.head_object(Bucket=bucket, Key=k)["Metadata"] for k in s3_keys(client, bucket)]
    crowded = [h for h in heads if int(h.get("shipper-files", "1")) > 40]
    assert crowded, [h.get("shipper-files") for h in heads]
    assert all("shipper-segments" not in h and "shipper-spans-bytes" in h for h in crowded)
    assert_provenance(store, shipping)


def test_damaged_entries_of_several_files_are_read_again_from_every_file(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # 60 files of 180 bytes in 4 KiB entries: three entries of several files.
    shipping = Shipping(tmp_path, **store, batch_max_bytes="4KiB")
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
    ranges = [stored_ranges(client, bucket, k)[1] for k in keys]
    assert sum(len(r) for r in ranges) >= SLOW_FILES  # each file is in some object
    assert_provenance(store, shipping)


FAST_FILES = 20
FAST_LINES = 600


@pytest.mark.timeout(300)
def test_kill9_twice_while_batches_of_several_files_are_in_flight(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store)
    writers = [
        start_writer(shipping.logs / f"fast-{n:02d}.log", n * FAST_LINES, FAST_LINES, rate=300)
        for n in range(FAST_FILES)
    ]
    shipping.daemon.start()
    shipping.kill9_while_delivering(rounds=2, every=2000, max_pause=0.5)
    for writer in writers:
        wait_writer(writer)
    # The lines may all be in the store already: stop the last run only once it is up.
    shipping.wait_started()
    shipping.finish(FAST_FILES * FAST_LINES)
    # No range of a file went into two objects (under two keys), and files shared objects.
    assert assert_ranges_tile(store, shipping) > 0
