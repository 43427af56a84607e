"""State that runs for a year: a long history starts like an empty one, a reused inode is
read whole, and the previous release's state directory is converted with nothing lost
or repeated. The real daemon, real files, the directory sink (the embedded default)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_state, read_totals
from tests.e2e_harness import Shipping
from tests.support.daemon import PROJECT_ROOT
from tests.support.history import add_history, dir_size
from tests.support.producers import run_writer
from tests.support.store import assert_exact, wait_for
from tests.test_e2e_logrotate import logrotate_once
from tests.test_e2e_retention import deletions, guard_toml, wait_gone

pytestmark = pytest.mark.e2e

HISTORY_OBJECTS = 200_000
HISTORY_FILES = 200
GRACE_SECS = 7 * 86400.0
#: The release before the state database: its daemon makes the state to convert.
PREVIOUS_RELEASE = "e44b80a"


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def ready_at(shipping: Shipping, timeout: float = 120) -> float:
    """Start the daemon; seconds until ``/readyz`` first answers 200 (polled every 20 ms)."""
    started = time.monotonic()
    shipping.daemon.start()
    deadline = started + timeout
    while time.monotonic() < deadline:
        assert shipping.daemon.is_running(), shipping.daemon.log_tail()
        try:
            with urllib.request.urlopen(shipping.health_url("/readyz"), timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except (AssertionError, urllib.error.URLError, ConnectionError):
            pass  # not listening yet, or not ready yet
        time.sleep(0.02)
    raise AssertionError(f"not ready in {timeout}s\n{shipping.daemon.log_tail()}")


def test_a_long_history_starts_like_an_empty_one(tmp_path: Path) -> None:
    empty = Shipping(tmp_path / "empty", "directory")
    run_writer(empty.logs / "app.log", 0, 500)
    empty_secs = ready_at(empty)
    empty_kib = vm_hwm_kib(empty.daemon.pid or 0)
    empty.finish(500)

    shipping = Shipping(tmp_path / "history", "directory")
    shipping.ship_then_stop(shipping.logs / "app.log", 500)
    add_history(shipping.state, objects=HISTORY_OBJECTS, files=HISTORY_FILES, grace_secs=GRACE_SECS)
    assert len(read_state(shipping.state).checkpoints) == HISTORY_FILES + 1
    run_writer(shipping.logs / "app.log", 500, 500)
    history_secs = ready_at(shipping)
    history_kib = vm_hwm_kib(shipping.daemon.pid or 0)
    print(
        f"ready: {empty_secs:.2f} s empty, {history_secs:.2f} s with {HISTORY_OBJECTS} objects;"
        f" peak RSS {empty_kib / 1024:.1f} / {history_kib / 1024:.1f} MiB"
    )
    assert history_secs <= empty_secs * 1.1 + 1.0
    assert history_kib <= empty_kib * 1.1 + 10 * 1024
    shipping.wait_delivered(1000)
    # The files gone for longer than the grace are forgotten, rows and all; the others
    # stay until their grace runs out. Nothing per object is kept.
    wait_for(
        lambda: len(read_state(shipping.state).checkpoints) == HISTORY_FILES // 2 + 1,
        30,
        message="files gone past the grace forgotten",
    )
    shipping.finish(1000)
    state_bytes = dir_size(shipping.state)
    print(f"state directory after {HISTORY_OBJECTS} objects: {state_bytes} bytes")
    assert state_bytes < 1 << 20  # a row per live or recent file; the objects left no trace


@pytest.mark.parametrize("forgotten", [True, False], ids=["forgotten", "remembered"])
def test_a_reused_inode_with_the_same_first_line_is_read_whole_after_a_restart(
    tmp_path: Path, forgotten: bool
) -> None:
    """A file is gone, and while the daemon is stopped a new file takes its device and
    inode, with the same first line and other content after it.

    Waiting for the filesystem to hand a freed inode out again is not reliable on a
    busy machine (other processes take it, and ext4 holds fresh ones back), so the old
    file is moved out of the logs directory instead (it is gone for the daemon, and
    its inode stays taken), then brought back under its name and rewritten in place:
    for the daemon, exactly a reused inode. ``forgotten``: its state was dropped after
    the grace period before the stop; else it is still known, with its markers.
    """
    grace = "checkpoint_grace_secs = 2\n" if forgotten else ""
    shipping = Shipping(tmp_path, "directory", extra_toml=grace)
    app = shipping.logs / "app.log"
    aside = tmp_path / "aside.log"
    # Both files start with this very line (so with the same head checksum): it is
    # delivered twice, once per file, and every other line once.
    banner = b'{"seq": 1000000, "msg": "service starting"}\n'
    app.write_bytes(banner)
    run_writer(app, 0, 20)
    old_inode = app.stat().st_ino
    shipping.daemon.start()
    shipping.wait_delivered(21)
    app.rename(aside)
    if forgotten:
        wait_for(lambda: not read_state(shipping.state).checkpoints, 30, message="forgotten")
    else:
        wait_for(
            lambda: all(c.finished for c in read_state(shipping.state).checkpoints.values()),
            30,
            message="finished",
        )
    assert shipping.daemon.terminate() == ExitCode.OK
    known = read_state(shipping.state).checkpoints
    assert len(known) == (0 if forgotten else 1)
    assert all(c.markers and c.finished for c in known.values()), "kept across the stop"

    aside.rename(app)
    with app.open("wb") as f:  # truncated in place: the same inode
        f.write(banner)
    run_writer(app, 20, 60)  # longer than the old file, other bytes after the banner
    assert app.stat().st_ino == old_inode
    shipping.daemon.start()
    delivered = shipping.wait_delivered(82)
    assert shipping.daemon.terminate() == ExitCode.OK
    assert delivered == shipping.delivered()
    assert delivered.pop(1_000_000) == 2
    assert_exact(delivered, range(80))


def test_the_previous_release_state_is_converted_with_nothing_lost_or_repeated(
    tmp_path: Path,
) -> None:
    old_tree = tmp_path / "previous-release"
    old_tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "archive", PREVIOUS_RELEASE, "shipper"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
    shipping = Shipping(tmp_path / "run", "directory", include="*.log*")
    logs = shipping.logs
    old = shipping.daemon
    old.env["PYTHONPATH"] = str(old_tree)  # the previous release, not this checkout
    run_writer(logs / "app.log", 0, 300)
    run_writer(logs / "other.log", 300, 100)
    old.start()
    wait_for(
        lambda: (shipping.state / "ledger.jsonl").exists() and shipping.delivered().total() >= 400,
        60,
        message="the previous release shipped the first lines",
    )
    # A rotation it saw, and lines it never read: sealed, spooled, or not read at all.
    (logs / "app.log").rename(logs / "app.log.1")
    run_writer(logs / "app.log", 400, 200)
    wait_for(lambda: shipping.delivered().total() >= 600, 60, message="the rotation shipped")
    run_writer(logs / "other.log", 600, 100)
    old.kill9()
    assert (shipping.state / "checkpoints.json").exists()
    run_writer(logs / "app.log", 700, 100)
    del old.env["PYTHONPATH"]

    shipping.daemon.start()
    shipping.wait_started()
    assert sorted(os.listdir(shipping.state)) == [
        "lock",
        "spool",
        "state.db",
        "state.db-shm",
        "state.db-wal",
    ]
    assert '"state directory converted to the state database"' in shipping.daemon.log_text()
    run_writer(logs / "other.log", 800, 100)
    shipping.finish(900)
    # Counted by the old ledger (converted) or the new state, some twice after the kill.
    assert read_totals(shipping.state).records >= 900


def test_a_compressed_rotation_stays_provable_past_the_grace_period(tmp_path: Path) -> None:
    """The file a compressed rotation holds is gone, so no scan sees it again; the disk
    guard, which finds and proves the compressed copy, keeps its state (delivered
    ranges included) alive while the copy is there, so retention can delete it once
    it is old enough, long after ``checkpoint_grace_secs``."""
    shipping = Shipping(
        tmp_path,
        "directory",
        include="app.log*",
        extra_toml=(
            "checkpoint_grace_secs = 2\n"
            "[retention]\nmax_age_secs = 8\nquiet_secs = 1\n"
            + guard_toml(high_watermark=1.0, critical_watermark=1.0)
        ),
    )
    app = shipping.logs / "app.log"
    run_writer(app, 0, 1000)
    with shipping.daemon:
        shipping.wait_started()
        shipping.wait_delivered(1000)
        logrotate_once(shipping, "    create\n    compress")
        rotated = shipping.logs / "app.log.1.gz"
        assert rotated.exists()
        run_writer(app, 1000, 100)
        wait_gone(shipping, rotated)
        (deleted,) = deletions(shipping, "deleted shipped rotated file")
        assert deleted["reason"] == "max_age"
        shipping.finish(1100)
