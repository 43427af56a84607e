"""Compression bombs in the logs directory, with the real daemon and a real store.

A bomb named like a rotated log (``app.log.3.zst``: 32 KB of zstd, ``app.log.4.gz``:
1 MB of gzip, each 1 GiB of zeros) must not raise the daemon's peak memory: each
test runs the same workload without the bombs first, as the control, and compares
the peak RSS (VmHWM) of the two daemons. With retention off nothing reads the
bombs at all; with it on, the disk guard refuses them (one ERROR each, the
``compressed_refused`` counter) and never deletes them. Every other line ships
exactly once.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.bombs import write_bomb
from tests.support.daemon import child_env
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.store import assert_exact, dir_seqs

pytestmark = pytest.mark.e2e

#: What each bomb decompresses to.
BOMB_BYTES = 1 << 30
#: How much more memory a run with bombs may peak at than the same run without.
RSS_MARGIN_BYTES = 20 << 20
#: Lines written while the daemon runs, in each run.
LINES = 4000
REFUSED = "compressed file refused"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bombs, by the name they get in a logs directory (written once)."""
    where = tmp_path_factory.mktemp("bombs")
    made = {"app.log.3.zst": where / "bomb.zst", "app.log.4.gz": where / "bomb.gz"}
    for path in made.values():
        write_bomb(path, BOMB_BYTES)
    assert made["app.log.3.zst"].stat().st_size < 40_000
    return made


def place(bombs: dict[str, Path], logs: Path) -> dict[Path, tuple[int, int]]:
    """Copy the bombs in, last written two days ago (old enough for any retention);
    returns each one's size and mtime, to show they were left alone."""
    placed = {}
    two_days_ago = time.time() - 2 * 86400
    for name, bomb in bombs.items():
        path = logs / name
        shutil.copyfile(bomb, path)
        os.utime(path, (two_days_ago, two_days_ago))
        st = path.stat()
        placed[path] = (st.st_size, st.st_mtime_ns)
    return placed


def left_alone(placed: dict[Path, tuple[int, int]]) -> bool:
    return all(
        path.exists() and (path.stat().st_size, path.stat().st_mtime_ns) == was
        for path, was in placed.items()
    )


def peak_rss(pid: int | None) -> int:
    """The peak resident set size of a running process, in bytes (VmHWM)."""
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def logged(text: str, message: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` whose message starts with ``message``."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            record = orjson.loads(line)
            if str(record.get("message", "")).startswith(message):
                found.append(record)
    return found


def stop_counters(shipping: Shipping) -> dict[str, int]:
    """The counters the daemon logged when it last stopped."""
    [*_, stopped] = logged(shipping.daemon.log_text(), "stopped")
    counters: dict[str, int] = stopped["counters"]
    return counters


def metric(shipping: Shipping, name: str) -> float:
    with urllib.request.urlopen(shipping.health_url("/metrics"), timeout=5) as answer:
        text = answer.read().decode()
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


@dataclass
class Run:
    peak_rss: int
    counters: dict[str, int]
    refused: list[dict[str, Any]]


def retention_toml(on: bool) -> str:
    guard = "[disk]\ncheck_interval_secs = 0.5\n"
    return guard + ("[retention]\nmax_age_secs = 60\nquiet_secs = 1\n" if on else "")


def run_daemon(
    root: Path, store: dict[str, Any], *, first: int, retention: bool, bombs: dict[str, Path]
) -> Run:
    """One run: the daemon ships lines ``first..first+LINES-1`` written while it runs,
    with the bombs in its logs directory (or none, for the control)."""
    shipping = Shipping(root, **store, include="app.log*", extra_toml=retention_toml(retention))
    placed = place(bombs, shipping.logs)
    expect_refused = len(placed) if retention else 0
    shipping.daemon.start()
    try:
        shipping.wait_started()
        writer = start_writer(shipping.logs / "app.log", first, LINES, rate=2000)
        wait_writer(writer)
        # The bucket holds the earlier runs' lines too; this run's ledger only its own.
        shipping._wait(lambda: shipping.ledger_records() >= LINES, 120, "lines in the ledger")
        shipping._wait(
            lambda: sum(shipping.delivered().values()) >= first + LINES, 60, "lines delivered"
        )
        shipping._wait(
            lambda: len(logged(shipping.daemon.log_text(), REFUSED)) >= expect_refused,
            60,
            f"{expect_refused} bombs reported",
        )
        refused = logged(shipping.daemon.log_text(), REFUSED)
        assert metric(shipping, "shipper_compressed_refused_total") == expect_refused
        peak = peak_rss(shipping.daemon.pid)
        assert shipping.daemon.terminate() == ExitCode.OK
    finally:
        shipping.daemon.close()
    assert left_alone(placed), "a bomb was deleted or changed"
    assert_exact(shipping.delivered(), range(first + LINES))
    return Run(peak, stop_counters(shipping), refused)


@pytest.mark.parametrize("retention", [False, True], ids=["retention_off", "retention_on"])
def test_bombs_in_the_logs_directory_cost_no_memory(
    tmp_path: Path, store: dict[str, Any], bombs: dict[str, Path], retention: bool
) -> None:
    control = run_daemon(tmp_path / "control", store, first=0, retention=retention, bombs={})
    bombed = run_daemon(tmp_path / "bombs", store, first=LINES, retention=retention, bombs=bombs)
    print(
        f"\npeak RSS, retention {'on' if retention else 'off'}:"
        f" {control.peak_rss / 2**20:.1f} MiB without the bombs,"
        f" {bombed.peak_rss / 2**20:.1f} MiB with them"
    )
    assert bombed.peak_rss <= control.peak_rss + RSS_MARGIN_BYTES
    assert control.counters.get("compressed_refused", 0) == 0
    if not retention:
        # Nothing may be deleted, so nothing decompresses the bombs: not even a refusal.
        assert bombed.refused == []
        assert bombed.counters.get("compressed_refused", 0) == 0
        return
    assert bombed.counters["compressed_refused"] == len(bombs)
    assert sorted(Path(r["path"]).name for r in bombed.refused) == sorted(bombs)
    for record in bombed.refused:
        assert record["level"] == "ERROR"
        assert record["compressed_offset"] > 0
        assert record["decompressed_offset"] > record["compressed_offset"]
        assert record["decompressed_offset"] < BOMB_BYTES // 16  # given up on early


def test_a_bomb_as_the_compressed_rotation_of_a_known_file(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    """The file the daemon was reading comes back compressed, with a bomb after its
    lines: its unread lines are finished from it, then the bomb is refused, once."""
    shipping = Shipping(tmp_path, **store, include="app.log")
    app = shipping.logs / "app.log"
    run_writer(app, 0, 1000)
    shipping.daemon.start()
    try:
        shipping.wait_delivered(1000)
        first_peak = peak_rss(shipping.daemon.pid)
        assert shipping.daemon.terminate() == ExitCode.OK
        run_writer(app, 1000, 1000)  # never read: only in the compressed rotation
        rotation = shipping.logs / "app.log.1.zst"
        write_bomb(rotation, BOMB_BYTES, prefix=app.read_bytes())
        app.unlink()
        run_writer(app, 2000, 1000)
        shipping.daemon.start()
        shipping.wait_delivered(3000)
        [refused] = shipping._wait(
            lambda: logged(shipping.daemon.log_text(), REFUSED), 60, "the bomb reported"
        )
        second_peak = peak_rss(shipping.daemon.pid)
        assert shipping.daemon.terminate() == ExitCode.OK
        assert stop_counters(shipping)["compressed_refused"] == 1
        assert refused["path"] == str(rotation) and refused["level"] == "ERROR"
        # Its lines were all read, the zeros after them never shipped.
        lines_bytes = refused["unread_from"]
        assert lines_bytes > 0 and refused["decompressed_offset"] > lines_bytes
        assert rotation.exists()
        assert second_peak <= first_peak + RSS_MARGIN_BYTES
        print(f"\npeak RSS: {first_peak / 2**20:.1f} MiB, then {second_peak / 2**20:.1f} MiB")

        # Left alone: the next start neither reads it nor reports it again.
        shipping.daemon.start()
        run_writer(app, 3000, 500)
        shipping.finish(3500)
        assert len(logged(shipping.daemon.log_text(), REFUSED)) == 1
    finally:
        shipping.daemon.close()


MEASURED_RUN = """
import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "shipper", *sys.argv[1:]]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(code)
"""


def measured_backfill(shipping: Shipping) -> tuple[int, str, int]:
    """``shipper backfill``: its exit code, its log and its peak RSS in bytes (measured
    by a parent of its own, whose only child it is)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_RUN, "backfill", "-c", str(shipping.config)],
        env=child_env(),
        cwd=shipping.root,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done.returncode, done.stderr, int(done.stdout.split()[-1])


def archive(logs: Path) -> None:
    """Lines 0..1999: half in a plain file, half in a gzipped rotation."""
    run_writer(logs / "app.log", 0, 1000)
    plain = logs / "app.log.1"
    run_writer(plain, 1000, 1000)
    (logs / "app.log.1.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()


def test_backfill_reports_a_bomb_and_is_incomplete(tmp_path: Path, bombs: dict[str, Path]) -> None:
    control = Shipping(tmp_path / "control", "directory", include="app.log*")
    archive(control.logs)
    code, log, control_peak = measured_backfill(control)
    assert code == ExitCode.OK, log
    assert_exact(dir_seqs(control.shipped), range(2000))

    shipping = Shipping(tmp_path / "bombs", "directory", include="app.log*")
    archive(shipping.logs)
    placed = place(bombs, shipping.logs)
    code, log, peak = measured_backfill(shipping)
    print(
        f"\nbackfill peak RSS: {control_peak / 2**20:.1f} MiB without the bombs,"
        f" {peak / 2**20:.1f} MiB with them"
    )
    assert code == ExitCode.INCOMPLETE, log
    assert peak <= control_peak + RSS_MARGIN_BYTES
    refused = logged(log, REFUSED)
    assert sorted(Path(r["path"]).name for r in refused) == sorted(bombs)
    [incomplete] = logged(log, "backfill incomplete")
    assert sorted(Path(p).name for p in incomplete["unread"]) == sorted(bombs)
    assert all(why.startswith("refused") for why in incomplete["unread"].values())
    assert_exact(dir_seqs(shipping.shipped), range(2000))
    assert left_alone(placed)

    # Run again: still incomplete, the bombs refused again, nothing shipped twice.
    code, log, _ = measured_backfill(shipping)
    assert code == ExitCode.INCOMPLETE, log
    assert len(logged(log, REFUSED)) == len(bombs)
    assert_exact(dir_seqs(shipping.shipped), range(2000))
