"""One end-to-end setting: a logs directory, a config, the real daemon and a real store."""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_totals
from tests.support.daemon import ShipperProcess
from tests.support.producers import run_writer
from tests.support.seaweed import SeaweedServer
from tests.support.store import (
    assert_exact,
    dir_records,
    dir_seqs,
    objects_holding,
    s3_records,
    s3_seqs,
    wait_for,
)

T = TypeVar("T")


@dataclass
class Shipping:
    root: Path
    sink: str
    seaweed: SeaweedServer | None = None
    bucket: str | None = None
    batch_max_bytes: str = "64KiB"
    batch_max_age_secs: float = 0.5
    include: str = "*.log"
    extra_toml: str = ""
    source_toml: str = ""
    #: More ``[sink]`` settings.
    sink_toml: str = ""
    #: Where the daemon sends S3 requests, when not to the store directly (a proxy).
    endpoint_url: str | None = None
    shutdown_timeout_secs: float = 30
    daemon: ShipperProcess = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.shipped = self.root / "shipped"
        self.state = self.root / "state"
        self.config = self.root / "shipper.toml"
        self.config.write_text(self._toml())
        env = self.seaweed.env() if self.seaweed is not None else {}
        self.daemon = ShipperProcess(self.config, self.root, env)

    def _toml(self) -> str:
        if self.sink == "s3":
            assert self.seaweed is not None and self.bucket is not None
            sink = (
                f'type = "s3"\nbucket = "{self.bucket}"\nprefix = "e2e"\n'
                f'endpoint_url = "{self.endpoint_url or self.seaweed.endpoint_url}"\n'
                'region = "us-east-1"\n'
            )
        else:
            sink = f'type = "directory"\npath = "{self.shipped}"\nprefix = "e2e"\n'
        return (
            f'state_dir = "{self.state}"\n'
            "poll_interval_secs = 0.5\n"
            f"shutdown_timeout_secs = {self.shutdown_timeout_secs}\n"
            f"{self.extra_toml}\n"
            "[health]\n"
            'listen = "127.0.0.1:0"\n'
            "[sources.app]\n"
            f'include = ["{self.logs}/{self.include}"]\n'
            "rotate_wait_secs = 1\n"
            f"{self.source_toml}\n"
            "[enrich]\n"
            'fields = { service = "e2e" }\n'
            "[batch]\n"
            f'max_bytes = "{self.batch_max_bytes}"\n'
            f"max_age_secs = {self.batch_max_age_secs}\n"
            "[sink]\n"
            f"{sink}"
            f"{self.sink_toml}\n"
        )

    def reconfigure(self, **changes: Any) -> None:
        """Change settings for the next start of the daemon."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.config.write_text(self._toml())

    def delivered(self) -> Counter[int]:
        if self.sink == "s3":
            assert self.seaweed is not None and self.bucket is not None
            return s3_seqs(self.seaweed.client(), self.bucket, "e2e/")
        return dir_seqs(self.shipped) if self.shipped.exists() else Counter()

    def ship_then_stop(self, path: Path, count: int, *, kill: bool = False) -> None:
        """Write lines 0..count-1 to ``path``, ship them all, then stop (cleanly, or kill -9)."""
        run_writer(path, 0, count)
        self.daemon.start()
        self.wait_delivered(count)
        if kill:
            self.daemon.kill9()
        else:
            assert self.daemon.terminate() == ExitCode.OK

    def wait_started(self, timeout: float = 60) -> None:
        """Until the daemon has done its first scan: files rotated away before it are not its."""

        def started() -> bool:
            this_run = self.daemon.log_text().rsplit("=== test harness: shipper start", 1)[-1]
            return '"started"' in this_run

        self._wait(started, timeout, "the daemon started")

    def health_url(self, path: str) -> str:
        """The URL of ``path`` on this run's health endpoint (its port is picked at start)."""
        this_run = self.daemon.log_text().rsplit("=== test harness: shipper start", 1)[-1]
        for line in this_run.splitlines():
            if '"health endpoint listening"' in line:
                return f"http://127.0.0.1:{orjson.loads(line)['port']}{path}"
        raise AssertionError(f"no health endpoint in the daemon log\n{self.daemon.log_tail()}")

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of ``GET /readyz``."""
        try:
            with urllib.request.urlopen(self.health_url("/readyz"), timeout=5) as answer:
                return answer.status, orjson.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def records(self) -> list[dict[str, Any]]:
        """Every record in the store, in no particular order."""
        if self.sink == "s3":
            assert self.seaweed is not None and self.bucket is not None
            return [r for _, r in s3_records(self.seaweed.client(), self.bucket, "e2e/")]
        return [r for _, r in dir_records(self.shipped)] if self.shipped.exists() else []

    def ledger_records(self) -> int:
        """Records the daemon says it delivered: cheap to poll, unlike reading the store."""
        return read_totals(self.state).records

    def wait_delivered(self, total: int, timeout: float = 120) -> Counter[int]:
        """Poll until ``total`` lines are in the store (duplicates count too).

        The ledger is polled first; the store, which is what the tests judge, is read
        once it claims enough (and again until it holds them).
        """
        self._wait(lambda: self.ledger_records() >= total, timeout, f"{total} lines in the ledger")

        def enough() -> Counter[int] | None:
            seqs = self.delivered()
            return seqs if sum(seqs.values()) >= total else None

        return self._wait(enough, timeout, f"{total} lines delivered")

    def finish(self, total: int) -> None:
        """Wait for lines 0..total-1, stop cleanly, and check the store holds each exactly once."""
        self._assert_exact(self.wait_delivered(total), total)
        assert self.daemon.terminate() == ExitCode.OK
        # Nothing more arrives after the stop: a late duplicate would show here.
        self._assert_exact(self.delivered(), total)

    def _assert_exact(self, delivered: Counter[int], total: int) -> None:
        """``assert_exact``; on failure, also which objects hold the duplicated seqs, and
        the daemon's log."""
        try:
            assert_exact(delivered, range(total))
        except AssertionError as exc:
            where = ""
            duplicated = [seq for seq, n in delivered.items() if n > 1]
            if self.sink == "s3" and duplicated:
                assert self.seaweed is not None and self.bucket is not None
                client = self.seaweed.client()
                holding = objects_holding(client, self.bucket, "e2e/", duplicated)
                where = f"\nobjects holding duplicated seqs:\n{holding}"
            raise AssertionError(
                f"{exc}{where}\n--- daemon log ---\n{self.daemon.log_tail()}"
            ) from None

    def wait_some_delivered(self, at_least: int, timeout: float = 60) -> None:
        self._wait(
            lambda: sum(self.delivered().values()) >= at_least,
            timeout,
            f"at least {at_least} lines delivered",
        )

    def kill9_while_delivering(self, *, rounds: int, every: int, max_pause: float) -> None:
        """``rounds`` times: once ``every`` more lines are delivered, wait a random moment
        of up to ``max_pause`` s (inside the read/seal/upload cycle, not a
        synchronisation point), kill -9 the daemon and start it again."""
        rng = random.Random()
        for round_ in range(rounds):
            self.wait_some_delivered(every * (round_ + 1))
            time.sleep(rng.uniform(0.0, max_pause))
            self.daemon.kill9()
            self.daemon.start()

    def _wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_for(predicate, timeout, interval=0.2, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{self.daemon.log_tail()}") from None
