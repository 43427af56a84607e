"""Shared fixtures: one real S3 store (SeaweedFS ``weed mini``) per session, a bucket per test."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.daemon import live_daemons
from tests.support.faultproxy import FaultProxy
from tests.support.seaweed import SeaweedServer, live_servers

#: Measured seconds of the longer tests (``python -m tests.support.durations``): the
#: longest start first, so that none of them runs last while the other workers idle.
DURATIONS = Path(__file__).with_name("durations.json")
#: What a test that is not in DURATIONS is taken to last.
UNMEASURED_E2E_SECS = 5.0
#: Test modules that run the daemon in this process (without the store).
RUN_THE_DAEMON = {"test_daemon_inprocess.py"}
#: Modules of end-to-end tests, some of which run the daemon without the store.
E2E_MODULES = "test_e2e_"
#: The stores made by the ``seaweed`` fixture (one per worker), which outlive a test.
_SESSION_STORES: list[SeaweedServer] = []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what needs the store or the daemon ``e2e``; order the longest tests first.

    ``-m "not e2e"`` is then the quick tier: unit and property tests alone.
    """
    for item in items:
        name = item.path.name
        uses_store = "seaweed" in getattr(item, "fixturenames", ())
        if uses_store or name in RUN_THE_DAEMON or name.startswith(E2E_MODULES):
            item.add_marker(pytest.mark.e2e)
    measured: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}

    def expected_secs(item: pytest.Item) -> float:
        if item.nodeid in measured:
            return measured[item.nodeid]
        return UNMEASURED_E2E_SECS if item.get_closest_marker("e2e") else 0.0

    items.sort(key=expected_secs, reverse=True)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    """Kill every daemon and store the test started, whatever happened to it."""
    daemons, stores = live_daemons(), live_servers()
    yield
    for daemon in live_daemons():
        if not any(daemon is d for d in daemons):
            daemon.close()
    for server in live_servers():
        if not any(server is s for s in [*stores, *_SESSION_STORES]):
            server.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a timeout, add the tail of each daemon's log (pytest-timeout prints the stacks)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or call.excinfo is None:
        return
    if "Timeout (>" not in str(call.excinfo.value):
        return
    for daemon in live_daemons():
        report.sections.append((f"log of {daemon.name}: {daemon.log_path}", daemon.log_tail(40)))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """The session's S3 store. A test may stop/restart it (outages); ``s3_bucket`` restarts it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    _SESSION_STORES.append(server)
    try:
        server.start_on_free_ports()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_bucket(seaweed: SeaweedServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh bucket named after the test; deleted (with its objects) afterwards."""
    if not seaweed.is_running():  # an earlier test left the store down
        seaweed.start()
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:8]}"
    client = seaweed.client()
    client.create_bucket(Bucket=name)
    yield name
    try:
        if not seaweed.is_running():
            seaweed.start()
        # weed mini runs with -s3.allowDeleteBucketNotEmpty (its default): deletes recursively.
        seaweed.client().delete_bucket(Bucket=name)
    except (BotoCoreError, ClientError, RuntimeError) as exc:
        warnings.warn(f"could not delete test bucket {name}: {exc!r}", stacklevel=1)


@pytest.fixture
def store(seaweed: SeaweedServer, s3_bucket: str) -> dict[str, Any]:
    """``Shipping(tmp_path, **store)``: ship to the session's SeaweedFS, in a fresh bucket."""
    return {"sink": "s3", "seaweed": seaweed, "bucket": s3_bucket}


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session's SeaweedFS (``endpoint_url``).

    A stall lasts 30 s, and a held answer waits up to 30 s for its client to go.
    """
    upstream = int(seaweed.endpoint_url.rsplit(":", 1)[1])
    faults = FaultProxy(upstream, stall_secs=30.0)
    faults.start()
    try:
        yield faults
    finally:
        faults.close()
