"""Signals of the running daemon: SIGHUP reloads (or rejects) the config, SIGTERM drains
within ``shutdown_timeout_secs``."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer
from tests.support.store import assert_exact, wait_for

pytestmark = pytest.mark.e2e


def logged(shipping: Shipping, message: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for line in shipping.daemon.log_text().splitlines()
        if line.startswith("{") and orjson.loads(line).get("message") == message
    ]


def wait_logged(shipping: Shipping, message: str, count: int = 1) -> list[dict[str, Any]]:
    return shipping._wait(
        lambda: (found := logged(shipping, message)) and len(found) >= count and found,
        30,
        f"{count} x {message!r} in the daemon log",
    )


def test_sighup_rejects_a_bad_config_and_applies_a_good_one(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory")
    app = shipping.logs / "app.log"
    good = shipping.config.read_text()
    run_writer(app, 0, 1000)
    with shipping.daemon:
        shipping.wait_delivered(1000)

        # A broken file: the daemon says what is wrong and goes on with what it has.
        shipping.config.write_text(
            good.replace('max_bytes = "64KiB"', 'max_bytes = "lots"') + "\nbogus_key = 1\n"
        )
        shipping.daemon.send_signal(signal.SIGHUP)
        [rejected] = wait_logged(
            shipping, "config reload rejected; still running on the previous config"
        )
        assert rejected["level"] == "ERROR"
        problems = " ".join(rejected["problems"])
        assert "batch.max_bytes" in problems and "bogus_key" in problems
        run_writer(app, 1000, 1000)
        shipping.wait_delivered(2000)
        with urllib.request.urlopen(shipping.health_url("/healthz"), timeout=5) as answer:
            assert answer.status == 200

        # The same file again: nothing to do.
        shipping.config.write_text(good)
        shipping.daemon.send_signal(signal.SIGHUP)
        wait_logged(shipping, "config reloaded: nothing changed")

        # A changed, valid file: the daemon runs again on it, in the same process.
        pid = shipping.daemon.pid
        shipping.config.write_text(good.replace('service = "e2e"', 'service = "reloaded"'))
        shipping.daemon.send_signal(signal.SIGHUP)
        [reloaded] = wait_logged(shipping, "config reloaded: restarting on it")
        assert reloaded["changed"] == ["enrich"]
        wait_logged(shipping, "started", count=2)
        assert shipping.daemon.pid == pid and shipping.daemon.is_running()
        run_writer(app, 2000, 1000)
        shipping.wait_delivered(3000)
        services = {r["seq"]: r["service"] for r in shipping.records()}
        assert {services[s] for s in range(2000)} == {"e2e"}
        assert {services[s] for s in range(2000, 3000)} == {"reloaded"}
        shipping.finish(3000)


def test_sigterm_drains_for_shutdown_timeout_then_keeps_the_rest(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    seaweed = store["seaweed"]
    shipping = Shipping(tmp_path, **store, shutdown_timeout_secs=3)
    run_writer(shipping.logs / "app.log", 0, 3000)
    seaweed.stop()  # nothing can be delivered: the drain runs out its time
    try:
        shipping.daemon.start()
        wait_for(lambda: list((shipping.state / "spool").glob("*.entry")), 60)
        started = time.monotonic()
        shipping.daemon.send_signal(signal.SIGTERM)
        code = shipping.daemon.wait(30)
        elapsed = time.monotonic() - started
        print(f"\nSIGTERM with the store down: exit {code} after {elapsed:.2f} s (timeout 3 s)")
        assert code == ExitCode.OK
        # It waited out its drain, and not much longer.
        assert 3.0 <= elapsed < 10.0
        assert logged(shipping, "shutdown timeout reached; undelivered batches stay in the spool")
        assert list((shipping.state / "spool").glob("*.entry"))
    finally:
        seaweed.start()
    # With the store back, a SIGTERM finds the drain done at once.
    shipping.daemon.start()
    assert_exact(shipping.wait_delivered(3000), range(3000))
    started = time.monotonic()
    assert shipping.daemon.terminate() == ExitCode.OK
    print(f"SIGTERM with nothing left to upload: exit after {time.monotonic() - started:.2f} s")
    assert_exact(shipping.delivered(), range(3000))
