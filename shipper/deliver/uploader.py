"""Uploads sealed spool entries, retrying without a count limit, and records each delivery.

The bound on retries is the spool's size, not a counter: data is never dropped
for having failed too often. A delivery is final only once the ledger says so;
then the spool entry is deleted. A crash anywhere in between re-sends the same
bytes to the same key, and the store's 412 makes that a no-op.
"""

from __future__ import annotations

__all__ = ["Backoff", "Uploader"]

import asyncio
import contextlib
import logging
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shipper.batch.pack import CONTENT_ENCODING
from shipper.batch.provenance import SEGMENTS_METADATA_BYTES, spans_trailer
from shipper.deliver.ledger import Ledger
from shipper.deliver.sinks.base import ObjectToPut, PutOutcome, Sink
from shipper.errors import SinkError, SpoolCorruptError
from shipper.logs import ThrottledLog
from shipper.redact_output import hide_url_secrets
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.spool.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: a random delay in ``[0, min(cap, base * 2**n))``."""

    base_secs: float = 0.2
    #: Short enough that a recovered store is found within seconds; with full jitter
    #: the workers then ask about once every 5 s each while it is down.
    cap_secs: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_secs, self.base_secs * 2 ** min(attempt, 30)))


def object_metadata(entry: SpoolEntry, host: str, *, spans_bytes: int = 0) -> dict[str, str]:
    """Provenance carried by every object; S3 metadata is ASCII, so the path is %-encoded.

    An object of several files also says how many (``shipper-files``) and, when it
    ends with a span list (see :mod:`shipper.batch.provenance`), how long that is
    (``shipper-spans-bytes``). Where they fit in 1 KB, every file's range is listed
    here too, as ``<fingerprint>:<start>-<end>:<lines>`` joined by ``;``
    (``shipper-segments``); the first file's path alone is here.
    """
    first = entry.segments[0]
    several = {}
    if len(entry.segments) > 1:
        several = {"shipper-files": str(len(entry.segments))}
        listed = ";".join(f"{s.fingerprint.id}:{s.start}-{s.end}:{s.lines}" for s in entry.segments)
        if len(listed) <= SEGMENTS_METADATA_BYTES:
            several["shipper-segments"] = listed
        if spans_bytes:
            several["shipper-spans-bytes"] = str(spans_bytes)
    return {
        "shipper-source": entry.source,
        "shipper-host": host,
        "shipper-path": urllib.parse.quote(first.path),
        "shipper-fingerprint": first.fingerprint.id,
        "shipper-start": str(first.start),
        "shipper-end": str(first.end),
        "shipper-lines": str(entry.lines),
        "shipper-records": str(entry.records),
        "shipper-sha256": entry.body_sha256,
        **several,
    }


def object_body(entry: SpoolEntry, body: bytes) -> tuple[bytes, int]:
    """The bytes an entry's object holds, and how many of them are its span list:
    a zstd object of several files ends with one (gzip objects list their files in
    their metadata only, so the sealer packs no more than fit there)."""
    if entry.codec != "zstd" or len(entry.segments) < 2:
        return body, 0
    trailer = spans_trailer(entry.segments)
    return body + trailer, len(trailer)


def _shown(exc: BaseException) -> str:
    """An error's text for a log line: a store's or a library's text may quote a
    request URL, with its userinfo or a presigned query string."""
    return hide_url_secrets(str(exc))


#: Permanent rejections in a row after which they are taken for a settings problem
#: (every write refused, say for an invalid storage class): retried slowly, no
#: longer quarantined, until one write succeeds.
QUARANTINE_IN_A_ROW = 3


class Uploader:
    def __init__(
        self,
        *,
        sink: Sink,
        spool: Spool,
        ledger: Ledger,
        host: str,
        concurrency: int,
        on_space_freed: Callable[[], None],
        on_damaged: Callable[[DamagedEntry], object] = lambda _: None,
        on_delivered: Callable[[SpoolEntry], object] = lambda _: None,
        observe_latency: Callable[[float], object] = lambda _: None,
        backoff: Backoff | None = None,
        access_retry_secs: float = 30.0,
    ) -> None:
        self.sink = sink
        self.spool = spool
        self.ledger = ledger
        self.host = host
        self.concurrency = concurrency
        self.on_space_freed = on_space_freed
        #: Called from an upload thread with an entry found damaged on disk.
        self.on_damaged = on_damaged
        #: Called on the event loop with each entry once the ledger holds it.
        self.on_delivered = on_delivered
        #: Called with the seconds each delivery's last attempt took.
        self.observe_latency = observe_latency
        self.backoff = backoff or Backoff()
        #: The mean wait between attempts while the store refuses access.
        self.access_retry_secs = access_retry_secs
        self.counters: Counter[str] = Counter()
        self.last_success: float | None = None
        self._queue: asyncio.Queue[SpoolEntry] = asyncio.Queue()
        # Set (and replaced) on every delivery: wakes workers waiting out a backoff, so
        # once the store is back the backlog goes at once, not after each one's delay.
        self._delivered = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        # Its own threads, so a store that hangs cannot starve the file reads.
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="upload")
        self._ledger_lock = threading.Lock()
        self._rng = random.Random()
        # One line per ten seconds at most, whatever the number of failing workers.
        # ERROR, as the users' guide logs a failed call that will be retried.
        self._failures = ThrottledLog(log, interval_secs=10.0, level=logging.ERROR)
        # Access failures (credentials, permissions) are logged once a minute.
        self._access_failures = ThrottledLog(log, interval_secs=60.0, level=logging.ERROR)
        #: Since when every write is refused for access (None: not now). The daemon
        #: is not ready while this is set.
        self.access_failing_since: float | None = None
        #: Since when uploads fail, for any reason, with none succeeding (None: not now).
        self.failing_since: float | None = None
        self.last_failure: str | None = None
        # Entries set aside in a row with no delivery in between.
        self._rejected_in_a_row = 0

    def submit(self, entry: SpoolEntry) -> None:
        """Queue a sealed entry. The queue holds handles only; the spool bounds their number."""
        self._queue.put_nowait(entry)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"upload-{i}") for i in range(self.concurrency)
        ]

    async def drain(self, timeout: float | None) -> bool:
        """Wait until every submitted entry is delivered, or ``timeout`` passes (None: no limit)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            return False
        return True

    async def stop(self, *, in_flight_secs: float = 0.0) -> None:
        """Stop the workers; wait up to ``in_flight_secs`` for puts already running.

        A put still running in a thread finishes on its own; its entry stays in the
        spool and is re-sent (and answered with a 412) on the next start.
        """
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if in_flight_secs > 0:
            # Waited for in a thread of its own (not the loop's executor, which
            # asyncio.run joins without a limit), so a hung put cannot hold the reload.
            loop = asyncio.get_running_loop()
            finished = loop.create_future()

            def settle() -> None:
                if not finished.done():
                    finished.set_result(None)

            def wait_for_puts() -> None:
                self._executor.shutdown(wait=True)
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(settle)

            threading.Thread(target=wait_for_puts, name="upload-stop", daemon=True).start()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished, in_flight_secs)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entry = await self._queue.get()
            try:
                await self._deliver(loop, entry)
            finally:
                self._queue.task_done()

    async def _deliver(self, loop: asyncio.AbstractEventLoop, entry: SpoolEntry) -> None:
        """Put, then record; on any failure wait and start over. A worker never dies.

        A retry after the put succeeded but the ledger write failed (disk full) puts
        the same bytes to the same key again: the store answers 412, and the entry is
        recorded then.
        """
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                outcome = await loop.run_in_executor(self._executor, self._deliver_once, entry)
            except SinkError as exc:
                reason: str = "access" if exc.kind == "permanent" else exc.kind
                failure: dict[str, object] = {"kind": exc.kind, "error": _shown(exc)}
                if exc.kind == "permanent" and self._rejected_in_a_row < QUARANTINE_IN_A_ROW:
                    try:
                        await loop.run_in_executor(self._executor, self._quarantine, entry, exc)
                    except OSError as io_error:  # our disk: retried like any local failure
                        reason, failure = "local_io", {"error": _shown(io_error)}
                    else:
                        self._rejected_in_a_row += 1
                        # The store answered: it is reachable, if not for this entry.
                        self.failing_since = None
                        outcome = None
                        break
            except OSError as exc:  # the spool or the ledger, on our own disk
                reason, failure = "local_io", {"error": _shown(exc)}
            except Exception as exc:  # a bug must not silently stop this worker
                log.exception("unexpected upload error", extra={"key": entry.key})
                reason, failure = "internal", {"error": hide_url_secrets(repr(exc))}
            else:
                if outcome is not None:  # None: damaged on disk, the store not asked
                    self._rejected_in_a_row = 0
                    self.access_failing_since = self.failing_since = None
                break
            if self.failing_since is None:
                self.failing_since = time.time()
            self.last_failure = reason
            attempt += 1
            self.counters[f"retries_{reason}"] += 1
            delay = self._retry_delay(reason, attempt, entry, failure)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._delivered.wait(), delay)
        if outcome is not None:
            log.debug(
                "delivered",
                extra={
                    "key": entry.key,
                    "outcome": outcome.value,
                    "secs": time.monotonic() - started,
                },
            )
            self.on_delivered(entry)
            self.counters[f"objects_{outcome.value}"] += 1
            self.counters["bytes_uploaded"] += entry.size
            self.counters["records_shipped"] += entry.records
            self.observe_latency(time.monotonic() - started)
            self.last_success = time.time()
            self._delivered.set()
            self._delivered = asyncio.Event()
        self.on_space_freed()

    def _retry_delay(
        self, reason: str, attempt: int, entry: SpoolEntry, failure: dict[str, object]
    ) -> float:
        """Log the failure and pick the wait before the next attempt."""
        fields = {"key": entry.key, "attempt": attempt, "backlog": self.backlog, **failure}
        if reason != "access":
            self._failures.warn("upload failed; retrying", reason=reason, will_retry=True, **fields)
            return self.backoff.delay(attempt, self._rng)
        # Credentials, permissions, a missing bucket, or every write refused: only a
        # change outside can fix it. Try at a slow cadence; say so once a minute.
        if self.access_failing_since is None:
            self.access_failing_since = time.time()
        self._access_failures.warn(
            "the store refuses every write (credentials, permissions or sink settings); retrying",
            failing_since=self.access_failing_since,
            **fields,
        )
        return self.access_retry_secs * (0.5 + self._rng.random())

    def _quarantine(self, entry: SpoolEntry, exc: SinkError) -> None:
        """Runs in a thread. A write that can never succeed: set the entry aside with
        the reason, never retry it, and keep shipping the others."""
        self.spool.quarantine(entry, reason=_shown(exc))
        self.counters["quarantined"] += 1
        log.error(
            "upload rejected for good; entry quarantined",
            extra={
                "key": entry.key,
                "error": _shown(exc),
                "source": entry.source,
                "path": entry.segments[0].path,
                "files": len(entry.segments),
                "start": entry.segments[0].start,
                "end": entry.segments[0].end,
            },
        )

    def _deliver_once(self, entry: SpoolEntry) -> PutOutcome | None:
        """Runs in a thread. None when the entry was found damaged on disk: its lines
        are read again from their file (``on_damaged``), never uploaded from it."""
        try:
            outcome = self._put(entry)
        except SpoolCorruptError as exc:
            self.counters["spool_corrupt"] += 1
            self.on_damaged(self.spool.damaged(entry, exc))
            return None
        self._record(entry, outcome)
        return outcome

    def _put(self, entry: SpoolEntry) -> PutOutcome:
        body, spans_bytes = object_body(entry, self.spool.read_body(entry))
        return self.sink.put(
            ObjectToPut(
                key=entry.key,
                body=body,
                metadata=object_metadata(entry, self.host, spans_bytes=spans_bytes),
                content_encoding=CONTENT_ENCODING.get(entry.codec, entry.codec),
            )
        )

    def _record(self, entry: SpoolEntry, outcome: PutOutcome) -> None:
        with self._ledger_lock:
            self.ledger.append(entry, outcome=outcome.value)
        self.spool.remove(entry)
