"""Shared fixtures: one real S3 store (SeaweedFS ``weed mini``) per session, a bucket per test."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.faultproxy import FaultProxy
from tests.support.seaweed import SeaweedServer


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """The session's S3 store. A test may stop/restart it (outages); ``s3_bucket`` restarts it."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
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
