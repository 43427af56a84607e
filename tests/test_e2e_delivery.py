"""Delivery under crashes, outages and a full spool: every line exactly once.

The crash loop and the outage have a short version that runs in CI and the
full version the delivery promise is measured with (``pytest -m slow``). Each
prints a ``FIGURES`` line: lines written, delivered and duplicated, objects,
peak RSS and the time to drain after recovery.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_totals
from tests.e2e_harness import Shipping
from tests.support.faultproxy import FaultProxy
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.store import assert_exact, s3_keys, spool_file_ends, stored_ranges, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.e2e


def memory_kib(pid: int | None) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a running process, in KiB."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    found[name] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def assert_ranges_tile(client: S3Client, bucket: str, keys: list[str]) -> None:
    """Per file, the byte ranges of all objects (an object may hold ranges of several
    files) follow on from 0: no overlap, no gap."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    for key in keys:
        for fid, start, end, _ in stored_ranges(client, bucket, key)[1]:
            by_file.setdefault(fid, []).append((start, end))
    for fid, ranges in by_file.items():
        ranges.sort()
        assert ranges[0][0] == 0, (fid, ranges[:3])
        gaps = [(a, b) for a, b in itertools.pairwise(ranges) if a[1] != b[0]]
        assert not gaps, f"{fid}: ranges overlap or leave a gap: {gaps[:5]}"


@contextlib.contextmanager
def cleaned_up(shipping: Shipping, writer: subprocess.Popen[str]) -> Iterator[None]:
    """Whatever happens in the block, leave no daemon or writer running."""
    try:
        yield
    finally:
        shipping.daemon.close()
        if writer.poll() is None:
            writer.kill()


def duplicated(delivered: Counter[int]) -> int:
    return sum(n - 1 for n in delivered.values() if n > 1)


def report(name: str, **figures: object) -> None:
    print(f"\nFIGURES {name} {orjson.dumps(figures).decode()}")


@pytest.mark.parametrize(
    "kills",
    [
        pytest.param(8, id="short", marks=pytest.mark.timeout(600)),
        pytest.param(30, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(1200)]),
    ],
)
def test_crash_loop_with_kills_inside_the_upload_path(
    tmp_path: Path, store: dict[str, Any], proxy: FaultProxy, kills: int
) -> None:
    rng = random.Random()
    # The rotated names are in the globs: a file created and rotated away while
    # the daemon is down is still found (see the README's Rotation section).
    shipping = Shipping(
        tmp_path,
        **store,
        endpoint_url=proxy.endpoint_url,
        batch_max_bytes="16KiB",
        include="app.log*",
    )
    total = kills * 6000  # the writer outlasts the loop: there are always writes to hold
    writer = start_writer(
        shipping.logs / "app.log",
        0,
        total,
        rate=2000,
        handler="rotating",
        max_bytes=1_000_000,
        backup_count=50,
    )
    peak_kib = 0
    in_upload = 0
    with cleaned_up(shipping, writer):
        for kill in range(kills):
            shipping.daemon.start()
            shipping.wait_started()
            if kill % 3 == 2 and writer.poll() is None:
                # The store takes the next write, and the daemon dies before the answer.
                proxy.queue("hold")
                assert proxy.holding.wait(60), shipping.daemon.log_tail()
                in_upload += 1
            else:
                time.sleep(rng.uniform(0.1, 1.5))  # a random moment, not a synchronisation
            peak_kib = max(peak_kib, memory_kib(shipping.daemon.pid).get("VmHWM", 0))
            shipping.daemon.kill9()
        wait_writer(writer, timeout=600)
        backlog = total - shipping.ledger_records()
        restarted = time.monotonic()
        shipping.daemon.start()
        wait_for(
            lambda: shipping.ledger_records() >= total,
            300,
            interval=0.2,
            message="every line in the ledger",
        )
        drain_secs = time.monotonic() - restarted  # the ledger, not reading the store back
        delivered = shipping.wait_delivered(total, timeout=300)
        peak_kib = max(peak_kib, memory_kib(shipping.daemon.pid).get("VmHWM", 0))
        assert_exact(delivered, range(total))
        assert shipping.daemon.terminate() == ExitCode.OK
    delivered = shipping.delivered()
    assert_exact(delivered, range(total))
    client = store["seaweed"].client()
    keys = s3_keys(client, store["bucket"], "e2e/")
    # One object per batch: a batch re-sent after a crash met its own object (412).
    assert_ranges_tile(client, store["bucket"], keys)
    assert not proxy.queued
    # Each kill inside the upload path left an object the daemon had not heard of:
    # the restart's re-send was answered 412 and recorded as already present.
    # Every object is recorded, some twice (a kill between the record and the spool).
    totals = read_totals(shipping.state)
    assert totals.already_present >= in_upload
    assert totals.stored + totals.already_present >= len(keys) >= totals.stored
    report(
        f"crash_loop[{kills}]",
        kills=kills,
        kills_inside_upload=in_upload,
        written=total,
        delivered=delivered.total(),
        duplicated=duplicated(delivered),
        objects=len(keys),
        stored=totals.stored,
        already_present=totals.already_present,
        peak_rss_mib=round(peak_kib / 1024, 1),
        backlog_lines_at_last_restart=backlog,
        drain_secs_after_last_restart=round(drain_secs, 1),
    )


class MemoryWatch:
    """Samples a process's RSS twice a second in a thread, labelled by phase."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.phase = "warmup"
        self.samples: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            rss = memory_kib(self.pid).get("VmRSS")
            if rss:
                self.samples.setdefault(self.phase, []).append(rss)


def lines_in(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


@pytest.mark.parametrize(
    ("outage_secs", "warmup_secs"),
    [
        pytest.param(15, 8, id="short", marks=pytest.mark.timeout(600)),
        pytest.param(60, 15, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
    ],
)
def test_store_outage_at_2000_lines_per_second(
    tmp_path: Path, store: dict[str, Any], outage_secs: int, warmup_secs: int
) -> None:
    seaweed = store["seaweed"]
    shipping = Shipping(tmp_path, **store)
    rate, after_secs = 2000, 5
    total = rate * (warmup_secs + outage_secs + after_secs)
    app = shipping.logs / "app.log"
    shipping.daemon.start()
    shipping.wait_started()
    writer = start_writer(app, 0, total, rate=rate)
    try:
        with cleaned_up(shipping, writer):
            with MemoryWatch(shipping.daemon.pid) as memory:
                assert shipping.readiness()[0] == 200
                time.sleep(warmup_secs)  # the load runs; this is the length of the warm-up
                memory.phase = "outage"
                seaweed.stop()
                went_down = time.monotonic()
                _, body = wait_for(
                    lambda: (r := shipping.readiness())[0] == 503 and r,
                    outage_secs,
                    interval=0.5,
                    message="not ready while the store is down",
                )
                not_ready_after = time.monotonic() - went_down
                assert any("uploads failing" in reason for reason in body["reasons"]), body
                time.sleep(max(0.0, outage_secs - (time.monotonic() - went_down)))
                backlog = lines_in(app)
                seaweed.start()
                restarted = time.monotonic()
                memory.phase = "recovery"
                wait_for(
                    lambda: shipping.readiness()[0] == 200, 120, interval=0.5, message="ready again"
                )
                ready_after = time.monotonic() - restarted
                wait_for(
                    lambda: shipping.ledger_records() >= backlog,
                    300,
                    interval=0.2,
                    message="the outage's backlog delivered",
                )
                drain_secs = time.monotonic() - restarted
            wait_writer(writer, timeout=600)
            peak_kib = memory_kib(shipping.daemon.pid).get("VmHWM", 0)
            delivered = shipping.wait_delivered(total, timeout=300)
            assert_exact(delivered, range(total))
            assert shipping.daemon.terminate() == ExitCode.OK
    finally:
        if not seaweed.is_running():
            seaweed.start()
    assert_exact(shipping.delivered(), range(total))
    warm = memory.samples["warmup"][len(memory.samples["warmup"]) // 2 :]
    before = sum(warm) / len(warm)
    during = max(memory.samples["outage"])
    assert during <= 1.2 * before, (before, during)
    keys = s3_keys(seaweed.client(), store["bucket"], "e2e/")
    assert_ranges_tile(seaweed.client(), store["bucket"], keys)
    totals = read_totals(shipping.state)
    # No crash: each object recorded once, as written by us or (a retried put whose
    # answer was lost in the outage) as already there.
    assert totals.stored + totals.already_present == len(keys)
    assert totals.records == total
    report(
        f"outage[{outage_secs}s]",
        written=total,
        delivered=delivered.total(),
        duplicated=duplicated(delivered),
        objects=len(keys),
        backlog_lines_at_recovery=backlog,
        rss_before_mib=round(before / 1024, 1),
        rss_max_during_outage_mib=round(during / 1024, 1),
        peak_rss_mib=round(peak_kib / 1024, 1),
        not_ready_after_secs=round(not_ready_after, 1),
        ready_again_after_secs=round(ready_after, 1),
        drain_secs=round(drain_secs, 1),
    )


def test_a_full_spool_pauses_reading_and_the_files_hold_the_backlog(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    seaweed = store["seaweed"]
    shipping = Shipping(
        tmp_path,
        **store,
        batch_max_bytes="16KiB",
        extra_toml='[spool]\nmax_bytes = "48KiB"\n',
    )
    app = shipping.logs / "app.log"
    total = 20_000
    run_writer(app, 0, total)
    spool = shipping.state / "spool"
    seaweed.stop()
    try:
        shipping.daemon.start()
        wait_for(
            lambda: "spool full; pausing reads" in shipping.daemon.log_text(),
            60,
            message="reading paused on a full spool",
        )
        status, body = shipping.readiness()
        assert status == 503 and any("spool" in r for r in body["reasons"]), body
        used = sum(p.stat().st_size for p in spool.glob("*.entry"))
        assert used <= 48 * 1024 + 16 * 1024  # the limit, and at most the batch in hand
        [read_to] = spool_file_ends(spool).values()
        assert read_to < app.stat().st_size // 4  # the rest waits in the file
    finally:
        seaweed.start()
    try:
        shipping.finish(total)
    finally:
        shipping.daemon.close()
