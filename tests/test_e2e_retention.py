"""Retention and the disk guard, with the real daemon: what is deleted, and what never is.

The disk guard tests fill a small tmpfs the test mounts (CI runs as root) with a
RotatingFileHandler while the store is stopped, and check both ``on_critical``
policies: ``keep`` (nothing unshipped deleted, not ready, then everything shipped
once the store is back) and ``delete_unshipped`` (the oldest unshipped files go,
each with a gap record that accounts for exactly the lines lost).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.store import assert_exact, s3_records

pytestmark = pytest.mark.e2e

SMALL_FS_BYTES = 8 * 1024 * 1024
#: Every writer line is padded to about a kilobyte: fewer lines fill the disk.
PAD = 700


def guard_toml(**disk: object) -> str:
    settings = {"check_interval_secs": 0.5, **disk}
    lines = [f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()]
    return "[disk]\n" + "\n".join(lines) + "\n"


def deletions(shipping: Shipping, message: str) -> list[dict[str, Any]]:
    """The daemon's log lines whose message starts with ``message``."""
    found = []
    for line in shipping.daemon.log_text().splitlines():
        if line.startswith("{"):
            logged = orjson.loads(line)
            if str(logged.get("message", "")).startswith(message):
                found.append(logged)
    return found


def wait_gone(shipping: Shipping, path: Path, timeout: float = 60) -> None:
    shipping._wait(lambda: not path.exists(), timeout, f"{path.name} deleted")


def test_retention_deletes_shipped_rotated_files_only(tmp_path: Path) -> None:
    shipping = Shipping(
        tmp_path,
        "directory",
        include="app.log*",
        extra_toml=(
            "[retention]\nmax_age_secs = 3\nquiet_secs = 1\n"
            + guard_toml(high_watermark=1.0, critical_watermark=1.0)
        ),
    )
    logs = shipping.logs
    live = logs / "app.log"
    # A rotation from before the shipper ran: compressed, never read, in no ledger.
    foreign = logs / "app.log.9.gz"
    foreign.write_bytes(gzip.compress(b'{"seq": -1, "note": "never shipped"}\n'))
    long_ago = time.time() - 86400
    os.utime(foreign, (long_ago, long_ago))
    run_writer(live, 0, 1000)
    shipping.daemon.start()
    try:
        shipping.wait_delivered(1000)
        live.rename(logs / "app.log.1")
        run_writer(live, 1000, 1000)
        # Old, but live: age alone never deletes the file being written.
        os.utime(live, (long_ago, long_ago))
        wait_gone(shipping, logs / "app.log.1")
        [deleted] = deletions(shipping, "deleted shipped rotated file")
        assert deleted["reason"] == "max_age" and deleted["path"].endswith("app.log.1")
        assert deleted["bytes"] > 0
        assert live.exists() and foreign.exists()
        shipping.wait_delivered(2000)
        assert shipping.daemon.terminate() == ExitCode.OK

        # The high watermark (0: always above it) deletes shipped files at any age, and
        # still neither the live file nor the unshipped one.
        shipping.reconfigure(
            extra_toml="[retention]\nquiet_secs = 1\n"
            + guard_toml(high_watermark=0.0, critical_watermark=1.0)
        )
        live.rename(logs / "app.log.1")
        shipping.daemon.start()
        run_writer(live, 2000, 1000)
        wait_gone(shipping, logs / "app.log.1")
        reasons = [d["reason"] for d in deletions(shipping, "deleted shipped rotated file")]
        assert reasons == ["max_age", "high_watermark"]
        assert live.exists() and foreign.exists()
        shipping.finish(3000)
    finally:
        shipping.daemon.close()


# ------------------------------------------------------------------- disk guard


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted at ``tmp_path/logs``: the logs' filesystem, nothing else on it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_BYTES},mode=0755", "tmpfs", str(logs)],
        check=True,
    )
    try:
        yield logs
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)


def used_ratio(path: Path) -> float:
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used / (used + st.f_bavail * st.f_frsize)


def lines_to_fill(tmp_path: Path, fraction: float) -> int:
    """How many writer lines fill ``fraction`` of the small filesystem."""
    sample = tmp_path / "sample.log"
    run_writer(sample, 0, 200, pad=PAD)
    line_bytes = sample.stat().st_size / 200
    sample.unlink()
    return int(SMALL_FS_BYTES * fraction / line_bytes)


def fill(shipping: Shipping, total: int) -> None:
    """Write ``total`` lines through a RotatingFileHandler (512 KiB files, many kept)."""
    writer = start_writer(
        shipping.logs / "app.log",
        0,
        total,
        rate=1500,
        pad=PAD,
        handler="rotating",
        max_bytes=512 * 1024,
        backup_count=500,
    )
    wait_writer(writer, timeout=120)


def disk_shipping(tmp_path: Path, store: dict[str, Any], **disk: object) -> Shipping:
    return Shipping(
        tmp_path,
        **store,
        include="app.log*",
        # A spool of one small batch: with the store down, nearly all stays unread.
        batch_max_bytes="16KiB",
        extra_toml='[spool]\nmax_bytes = "16KiB"\n[retention]\nquiet_secs = 1\n'
        + guard_toml(high_watermark=0.5, critical_watermark=0.7, **disk),
    )


@contextlib.contextmanager
def filled_with_the_store_down(
    tmp_path: Path, store: dict[str, Any], on_critical: str
) -> Iterator[tuple[Shipping, int]]:
    """The daemon running with the store stopped, the small filesystem 85% written;
    the store starts again when the block ends."""
    seaweed = store["seaweed"]
    shipping = disk_shipping(tmp_path, store, on_critical=on_critical)
    total = lines_to_fill(tmp_path, 0.85)
    seaweed.stop()
    try:
        shipping.daemon.start()
        shipping.wait_started()
        fill(shipping, total)
        yield shipping, total
    finally:
        seaweed.start()


def test_disk_guard_keeps_unshipped_files_above_critical(
    tmp_path: Path, small_fs: Path, store: dict[str, Any]
) -> None:
    with filled_with_the_store_down(tmp_path, store, "keep") as (shipping, total):
        assert used_ratio(small_fs) > 0.8

        def critical() -> dict[str, Any] | None:
            status, body = shipping.readiness()
            reasons = body.get("reasons", [])
            return (
                body if status == 503 and any("critical_watermark" in r for r in reasons) else None
            )

        critical_body = shipping._wait(critical, 30, "not ready: disk above critical")
        assert any(str(small_fs) in r for r in critical_body["reasons"]), critical_body
        shipping._wait(
            lambda: (
                "disk above critical_watermark: unshipped files are kept"
                in shipping.daemon.log_text()
            ),
            30,
            "the critical alert",
        )
        files_before = sorted(p.name for p in small_fs.iterdir())
        assert len(files_before) > 10
        assert deletions(shipping, "deleted shipped rotated file") == []
        assert deletions(shipping, "deleted an unshipped rotated file") == []
        assert deletions(shipping, "deleted a rotated file not yet delivered") == []
    try:
        # The store is back: everything ships, then the high watermark frees the disk.
        assert_exact(shipping.wait_delivered(total, timeout=180), range(total))
        shipping._wait(lambda: used_ratio(small_fs) <= 0.5, 60, "the disk below high")
        shipping._wait(lambda: shipping.readiness()[0] == 200, 30, "ready again")
        deleted = deletions(shipping, "deleted shipped rotated file")
        assert deleted and {d["reason"] for d in deleted} == {"high_watermark"}
        assert (small_fs / "app.log").exists()
        shipping.finish(total)
    finally:
        shipping.daemon.close()


def test_disk_guard_deletes_unshipped_files_with_a_gap_record(
    tmp_path: Path, small_fs: Path, store: dict[str, Any]
) -> None:
    seaweed = store["seaweed"]
    with filled_with_the_store_down(tmp_path, store, "delete_unshipped") as (shipping, total):
        shipping._wait(lambda: used_ratio(small_fs) <= 0.7, 60, "the disk brought below critical")
        lost_logs = deletions(shipping, "deleted an unshipped rotated file")
        assert lost_logs, shipping.daemon.log_tail()
        assert all(d["level"] == "ERROR" for d in lost_logs)
        assert (small_fs / "app.log").exists()
    try:
        client = seaweed.client()
        gaps_logged = len(lost_logs)

        def everything() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
            records = [r for _, r in s3_records(client, shipping.bucket or "", "e2e/")]
            gaps = [r for r in records if r.get("shipper_gap") is True]
            lines = [r for r in records if r.get("shipper_gap") is not True]
            lost = sum(g["lines"] for g in gaps)
            return (
                (lines, gaps) if len(gaps) >= gaps_logged and len(lines) + lost >= total else None
            )

        lines, gaps = shipping._wait(everything, 180, "every line delivered or in a gap record")
        delivered = [r["seq"] for r in lines]
        assert len(delivered) == len(set(delivered)), "a line delivered twice"
        lost = set(range(total)) - set(delivered)
        assert set(delivered) <= set(range(total))
        # Exactly the lines the gap records account for, no more, no fewer.
        assert len(lost) == sum(g["lines"] for g in gaps) > 0
        for gap in gaps:
            assert gap["end"] > gap["start"] >= 0
            assert gap["path"].startswith(str(small_fs)) and gap["fingerprint"]
            assert gap["reason"] == "deleted unshipped: critical_watermark"
        print(
            f"\ndisk guard, delete_unshipped: {total} lines written, {len(delivered)} delivered,"
            f" {len(lost)} lost in {len(gaps)} gap records"
        )
        lost_logs = deletions(shipping, "deleted an unshipped rotated file")
        logged = {(d["fingerprint"], d["start"], d["end"]) for d in lost_logs}
        assert logged == {(g["fingerprint"], g["start"], g["end"]) for g in gaps}
        assert shipping.daemon.terminate() == ExitCode.OK
    finally:
        shipping.daemon.close()
