"""The systemd unit (verified and scored by systemd-analyze) and the notify protocol."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shipper.exit_codes import ExitCode
from shipper.ops.sdnotify import Notifier
from tests.e2e_harness import Shipping
from tests.support.daemon import PROJECT_ROOT, ShipperProcess
from tests.support.producers import run_writer
from tests.support.store import assert_exact, wait_for

UNIT = PROJECT_ROOT / "systemd" / "shipper.service"
ANALYZE = shutil.which("systemd-analyze")
# ./dev test installs it; only a run by hand elsewhere may lack it (CI must not).
needs_analyze = pytest.mark.skipif(
    ANALYZE is None and not os.environ.get("CI"), reason="systemd-analyze is not installed"
)


BACKFILL_UNIT = PROJECT_ROOT / "systemd" / "shipper-backfill@.service"


def installed_unit(tmp_path: Path, unit_file: Path = UNIT, name: str = "shipper.service") -> Path:
    """The unit with ExecStart pointing at this checkout's ``shipper`` (verify checks it)."""
    shipper = Path(sys.executable).parent / "shipper"
    unit = tmp_path / name
    unit.write_text(unit_file.read_text().replace("/opt/shipper/bin/shipper", str(shipper)))
    return unit


@needs_analyze
@pytest.mark.parametrize(
    ("unit_file", "name"),
    [(UNIT, "shipper.service"), (BACKFILL_UNIT, "shipper-backfill@archive.service")],
    ids=["daemon", "backfill"],
)
def test_the_units_verify_and_score_ok(tmp_path: Path, unit_file: Path, name: str) -> None:
    unit = installed_unit(tmp_path, unit_file, name)
    verify = subprocess.run(
        [str(ANALYZE), "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert name not in verify.stderr  # no warning about our unit
    security = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", security.stdout)
    assert found, security.stdout + security.stderr
    print(f"systemd-analyze security: {found[1]} {found[2]}")
    assert found[2] in ("SAFE", "OK") and float(found[1]) < 2.0


def test_the_unit_says_what_the_issue_asks() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=shipper",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/log/app",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ):
        assert f"\n{line}\n" in text, line
    watchdog = int(re.search(r"\nWatchdogSec=(\d+)\n", text)[1])  # type: ignore[index]
    stop = int(re.search(r"\nTimeoutStopSec=(\d+)\n", text)[1])  # type: ignore[index]
    assert stop > 30 and watchdog >= 10  # above the default shutdown_timeout_secs


def test_notifier_sends_to_path_and_abstract_sockets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        notifier.notify(ready="1", status="all good")
        assert listener.recv(4096) == b"READY=1\nSTATUS=all good"
        notifier.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0shipper-test-notify")
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@shipper-test-notify"})
        notifier.notify(watchdog="1")
        assert listener.recv(4096) == b"WATCHDOG=1"
        notifier.close()
    assert not Notifier.from_env({}).enabled  # outside systemd: nothing
    assert Notifier.from_env({"WATCHDOG_USEC": "4000000"}).watchdog_interval_secs == 2.0
    assert Notifier.from_env({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_usec is None
    # Gone systemd: logged, not raised.
    Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).notify(ready="1")


@pytest.mark.e2e
def test_the_daemon_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory")
    run_writer(shipping.logs / "app.log", 0, 200)
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.settimeout(1.0)
        env = {"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}
        shipping.daemon = ShipperProcess(shipping.config, tmp_path, env)
        received: list[bytes] = []

        def has(fragment: bytes, count: int = 1) -> bool:
            with contextlib.suppress(TimeoutError):
                received.append(listener.recv(4096))
            return sum(fragment in m for m in received) >= count

        with shipping.daemon:
            wait_for(lambda: has(b"READY=1"), 60, interval=0, message="READY=1")
            ready = next(m for m in received if b"READY=1" in m)
            assert b"STATUS=ready;" in ready and b"files open" in ready
            wait_for(lambda: has(b"WATCHDOG=1", 3), 30, interval=0, message="3 watchdog pings")
            # systemctl reload: RELOADING=1 (with the monotonic time), then READY=1 again.
            shipping.wait_delivered(200)
            shipping.config.write_text(
                shipping.config.read_text().replace('service = "e2e"', 'service = "again"')
            )
            shipping.daemon.send_signal(signal.SIGHUP)
            wait_for(lambda: has(b"RELOADING=1"), 30, interval=0, message="RELOADING=1")
            reloading = next(m for m in received if b"RELOADING=1" in m)
            assert b"MONOTONIC_USEC=" in reloading
            wait_for(lambda: has(b"READY=1", 2), 30, interval=0, message="READY=1 again")
            run_writer(shipping.logs / "app.log", 200, 100)
            shipping.wait_delivered(300)
            assert shipping.daemon.terminate() == ExitCode.OK
        wait_for(lambda: has(b"STOPPING=1"), 10, interval=0, message="STOPPING=1")
    assert_exact(shipping.delivered(), range(300))
