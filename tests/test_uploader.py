"""The uploader with a real spool and ledger, and a store that fails on purpose.

A store stand-in is fine here: this is the uploader's own logic (classification
and what it does with each kind of failure). The end-to-end tests use SeaweedFS.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson
import pytest

from shipper.batch.pack import PackedBatch
from shipper.batch.segment import Segment
from shipper.deliver.ledger import Ledger
from shipper.deliver.sinks.base import ObjectToPut, PutOutcome
from shipper.deliver.sinks.s3 import failure_kind
from shipper.deliver.uploader import QUARANTINE_IN_A_ROW, Backoff, Uploader
from shipper.errors import FailureKind, SinkError
from shipper.files.fingerprint import Fingerprint
from shipper.spool.entry import SpoolEntry
from shipper.spool.spool import Spool
from shipper.state.delivered import ShippedIndex
from shipper.state.statedb import StateDB

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="ab" * 32)


class ScriptedStore:
    """Refuses the keys it is told to, with the kind it is told; stores the rest."""

    def __init__(self) -> None:
        self.refuse: dict[str, FailureKind] = {}
        self.stored: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def put(self, obj: ObjectToPut) -> PutOutcome:
        with self.lock:
            for prefix, kind in self.refuse.items():
                if obj.key.startswith(prefix):
                    raise SinkError(f"{obj.key}: refused ({kind})", kind=kind)
            if obj.key in self.stored:
                return PutOutcome.ALREADY_PRESENT
            self.stored[obj.key] = obj.body
            return PutOutcome.STORED

    def close(self) -> None:
        pass


def seal(spool: Spool, key: str, start: int) -> SpoolEntry:
    return spool.seal(
        PackedBatch(
            key=key,
            source="app",
            segments=(Segment(FP, "/l/app.log", start, start + 10, 1),),
            records=1,
            body=b"body-" + key.encode(),
            body_sha256="00" * 32,
            uncompressed_bytes=10,
            codec="zstd",
            first_time=1.0,
        )
    )


def run_uploads(
    tmp_path: Path, store: ScriptedStore, keys: list[str], until: object, timeout: float = 10
) -> Uploader:
    spool = Spool(tmp_path / "spool")
    spool.recover()
    db = StateDB(tmp_path / "state.db")
    db.open()
    ledger = Ledger(db, ShippedIndex())

    async def main() -> Uploader:
        uploader = Uploader(
            sink=store,
            spool=spool,
            ledger=ledger,
            host="h",
            concurrency=1,  # in order, so "in a row" is well defined
            on_space_freed=lambda: None,
            backoff=Backoff(base_secs=0.01, cap_secs=0.02),
            access_retry_secs=0.02,
        )
        uploader.start()
        for index, key in enumerate(keys):
            uploader.submit(seal(spool, key, index * 10))
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(uploader):  # type: ignore[operator]
            assert asyncio.get_running_loop().time() < deadline, uploader.counters
            await asyncio.sleep(0.01)
        await uploader.stop()
        return uploader

    try:
        return asyncio.run(main())
    finally:
        db.close()


def test_a_permanent_rejection_is_quarantined_and_the_rest_ships(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.refuse["bad"] = "permanent"
    keys = ["a1", "bad1", "a2", "a3"]
    uploader = run_uploads(
        tmp_path, store, keys, lambda u: len(store.stored) == 3 and u.counters["quarantined"]
    )
    assert sorted(store.stored) == ["a1", "a2", "a3"]
    quarantine = tmp_path / "spool" / "quarantine"
    [entry_file] = quarantine.glob("*.entry")
    reason = orjson.loads(entry_file.with_suffix(".reason.json").read_bytes())
    assert reason["key"] == "bad1" and "refused (permanent)" in reason["reason"]
    assert (reason["path"], reason["start"], reason["end"]) == ("/l/app.log", 10, 20)
    assert uploader.counters["retries_access"] == 0  # never looped
    assert list((tmp_path / "spool").glob("*.entry")) == []


def test_many_rejections_in_a_row_are_a_settings_problem_not_quarantined(
    tmp_path: Path,
) -> None:
    store = ScriptedStore()
    store.refuse["k"] = "permanent"  # every write: an invalid storage class, say
    keys = [f"k{i}" for i in range(QUARANTINE_IN_A_ROW + 2)]

    def refused_for_a_while(uploader: Uploader) -> bool:
        if store.refuse and uploader.counters["retries_access"] >= 3:
            assert uploader.access_failing_since is not None  # not ready
            store.refuse.clear()  # the operator fixes the settings
        return len(store.stored) == len(keys) - QUARANTINE_IN_A_ROW

    uploader = run_uploads(tmp_path, store, keys, refused_for_a_while)
    assert uploader.counters["quarantined"] == QUARANTINE_IN_A_ROW
    assert uploader.access_failing_since is None


def test_access_failures_retry_slowly_until_they_clear(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.refuse["k"] = "access"

    def cleared_later(uploader: Uploader) -> bool:
        if uploader.counters["retries_access"] >= 2:
            store.refuse.clear()
        return len(store.stored) == 2

    uploader = run_uploads(tmp_path, store, ["k1", "k2"], cleared_later)
    assert uploader.counters["quarantined"] == 0 and uploader.access_failing_since is None


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (500, "InternalError", "retriable"),
        (503, "SlowDown", "retriable"),
        (429, "", "retriable"),
        (400, "RequestTimeout", "retriable"),
        (400, "BadDigest", "retriable"),
        (400, "XAmzContentSHA256Mismatch", "retriable"),
        (0, "", "retriable"),  # no HTTP response at all
        (403, "AccessDenied", "access"),
        (403, "SignatureDoesNotMatch", "access"),
        (400, "ExpiredToken", "access"),
        (404, "NoSuchBucket", "access"),
        (403, "RequestTimeTooSkewed", "access"),
        (400, "InvalidArgument", "permanent"),
        (400, "KeyTooLongError", "permanent"),
        (400, "MetadataTooLarge", "permanent"),
        (400, "InvalidStorageClass", "permanent"),
        (413, "", "permanent"),
        (404, "", "access"),  # not an S3 endpoint: a settings problem, not bad data
        (405, "MethodNotAllowed", "access"),
    ],
)
def test_store_errors_are_classified(status: int, code: str, kind: str) -> None:
    assert failure_kind(status, code) == kind
