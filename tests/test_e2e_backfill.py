"""``shipper backfill``: historical files, compressed ones too, shipped once; resumable."""

from __future__ import annotations

import gzip
import signal
from pathlib import Path

import orjson
import pytest
import zstandard

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_totals
from tests.e2e_harness import Shipping
from tests.support.daemon import ShipperProcess, run_cli
from tests.support.store import assert_exact, dir_seqs, wait_for

pytestmark = pytest.mark.e2e


def lines(first: int, count: int, pad: int = 40) -> bytes:
    return b"".join(
        orjson.dumps({"seq": seq, "level": "INFO", "message": "old " + "x" * pad}) + b"\n"
        for seq in range(first, first + count)
    )


def archive(shipping: Shipping) -> int:
    """Historical files of every kind in the logs directory; returns how many lines."""
    logs = shipping.logs
    (logs / "app.log").write_bytes(lines(0, 1000))
    (logs / "app.log.1").write_bytes(lines(1000, 1000))
    (logs / "app.log.2.gz").write_bytes(gzip.compress(lines(2000, 1000)))
    (logs / "app.log.3.zst").write_bytes(zstandard.compress(lines(3000, 1000)))
    # The last line of a file that was never finished: shipped, flagged partial.
    (logs / "app.log.4.gz").write_bytes(gzip.compress(lines(4000, 999) + lines(4999, 1)[:-1]))
    (logs / "empty.log").write_bytes(b"")
    (logs / "empty.log.1.gz").write_bytes(gzip.compress(b""))
    return 5000


def backfill(shipping: Shipping) -> tuple[int, str]:
    done = run_cli(["backfill", "-c", str(shipping.config)], cwd=shipping.root, timeout=120)
    return done.returncode, done.stderr


def test_backfill_ships_every_file_once_and_a_second_run_nothing(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", include="*.log*")
    total = archive(shipping)
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    assert "backfill complete" in log
    assert_exact(dir_seqs(shipping.shipped), range(total))
    objects = sorted(p.name for p in shipping.shipped.rglob("*.ndjson.zst"))
    delivered = read_totals(shipping.state)

    # Run again: every file is finished, nothing is read or shipped twice.
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    assert sorted(p.name for p in shipping.shipped.rglob("*.ndjson.zst")) == objects
    assert read_totals(shipping.state) == delivered

    # A file added to the archive later is all the next run ships.
    (shipping.logs / "app.log.5.gz").write_bytes(gzip.compress(lines(total, 500)))
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    assert_exact(dir_seqs(shipping.shipped), range(total + 500))


def test_an_interrupted_backfill_goes_on_where_it_stopped(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", include="*.log*", batch_max_bytes="16KiB")
    logs = shipping.logs
    total = 0
    for n in range(6):
        (logs / f"app.log.{n}.gz").write_bytes(gzip.compress(lines(total, 4000, pad=200)))
        total += 4000
    run = ShipperProcess(shipping.config, tmp_path, name="backfill", subcommand="backfill")
    try:
        run.start()
        wait_for(lambda: sum(dir_seqs(shipping.shipped).values()) > 2000, 60)
        run.send_signal(signal.SIGTERM)  # stopped by hand: says it is not done
        assert run.wait(60) == ExitCode.INCOMPLETE
        assert "backfill interrupted" in run.log_text()
        run.start()
        wait_for(lambda: sum(dir_seqs(shipping.shipped).values()) > 8000, 60)
        run.kill9()  # a crash in the middle of it
    finally:
        run.close()
    assert sum(dir_seqs(shipping.shipped).values()) < total
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    assert_exact(dir_seqs(shipping.shipped), range(total))


def test_more_files_than_slots_a_shared_banner_and_a_file_grown_since(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", include="*.log*", extra_toml="max_open_files = 4\n")
    banner = b'{"seq": -1, "message": "service starting"}\n'  # every file's first line
    total = 0
    for n in range(20):
        body = banner + lines(total, 50)
        (shipping.logs / f"app.log.{n}.gz").write_bytes(gzip.compress(body))
        total += 50
    for n in range(5):
        (shipping.logs / f"old{n}.log").write_bytes(lines(total, 50))
        total += 50
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    seqs = dir_seqs(shipping.shipped)
    assert seqs.pop(-1) == 20  # the banner, once per compressed file
    assert_exact(seqs, range(total))

    # Written to after it was read through: the next run ships what was added.
    with (shipping.logs / "old0.log").open("ab") as f:
        f.write(lines(total, 10))
    code, log = backfill(shipping)
    assert code == ExitCode.OK, log
    seqs = dir_seqs(shipping.shipped)
    seqs.pop(-1)
    assert_exact(seqs, range(total + 10))


def test_a_file_it_cannot_read_makes_the_run_incomplete(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", include="*.log*")
    (shipping.logs / "app.log").write_bytes(lines(0, 100))
    (shipping.logs / "cut.log").write_bytes(
        b'{"seq": 100, "message": "no newl'
    )  # no first line yet
    (shipping.logs / "bad.log.1.gz").write_bytes(b"not gzip at all")
    code, log = backfill(shipping)
    assert code == ExitCode.INCOMPLETE, log
    [incomplete] = [
        orjson.loads(line) for line in log.splitlines() if "backfill incomplete" in line
    ]
    assert incomplete["level"] == "ERROR"
    unread = " ".join(f"{path}: {why}" for path, why in incomplete["unread"].items())
    assert "cut.log: its first line is not complete" in unread
    assert "bad.log.1.gz: cannot decompress it" in unread
    assert_exact(dir_seqs(shipping.shipped), range(100))
