"""The real daemon against SeaweedFS behind a proxy that injects store faults.

Every retriable fault (500, 503 SlowDown, a reset mid-body, a stall, a burst of
403s) is survived with each line delivered exactly once; a permanent rejection
lands in quarantine with its reason while everything else ships.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.faultproxy import FaultProxy
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.store import assert_exact, wait_for


@pytest.mark.timeout(600)
def test_retriable_faults_and_a_403_burst_lose_and_repeat_nothing(
    tmp_path: Path, store: dict[str, Any], proxy: FaultProxy
) -> None:
    shipping = Shipping(tmp_path, **store, endpoint_url=proxy.endpoint_url, batch_max_bytes="8KiB")
    proxy.queue("500", "503", "reset", "stall", "503", "reset", "403", "403", "403", "500")
    writer = start_writer(shipping.logs / "app.log", 0, 3000, rate=1000)
    with shipping.daemon:
        wait_writer(writer)
        shipping.finish(3000)
    assert not proxy.queued  # every fault was met by a request
    assert set(proxy.injected) == {"500", "503", "reset", "stall", "403"}
    log = shipping.daemon.log_text()
    assert "the store refuses every write" in log  # the 403s: the access path


def test_a_permanent_rejection_is_quarantined_and_the_rest_ships(
    tmp_path: Path, store: dict[str, Any], proxy: FaultProxy
) -> None:
    bad = tmp_path / "logs" / "bad" / "bad.log"
    bad.parent.mkdir(parents=True)
    shipping = Shipping(
        tmp_path,
        **store,
        endpoint_url=proxy.endpoint_url,
        extra_toml=f'[sources.bad]\ninclude = ["{bad.parent}/*.log"]\n',
    )
    proxy.reject_keys.add("source=bad/")
    run_writer(bad, 100_000, 50)
    run_writer(shipping.logs / "app.log", 0, 2000)
    with shipping.daemon:
        quarantine = shipping.state / "spool" / "quarantine"
        wait_for(lambda: list(quarantine.glob("*.reason.json")), 60, message="a quarantined entry")
        shipping.wait_delivered(2000)
        assert shipping.daemon.is_running()  # it went on shipping
        assert shipping.daemon.terminate() == ExitCode.OK
    assert_exact(shipping.delivered(), range(2000))  # nothing of the bad source, all of app
    [reason_file] = quarantine.glob("*.reason.json")
    reason = orjson.loads(reason_file.read_bytes())
    assert "source=bad/" in reason["key"] and "InvalidArgument" in reason["reason"]
    assert (reason["start"], reason["end"]) == (0, bad.stat().st_size)
    assert reason_file.with_suffix("").with_suffix(".entry").exists()
    assert "quarantined" in shipping.daemon.log_text()
    assert proxy.injected["400"] == 1  # set aside once, never retried
