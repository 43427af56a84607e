"""A logs directory written by someone hostile, with the real daemon and a real store.

Whatever can write to the logs volume (an app container sharing an emptyDir)
must not make the shipper upload a file outside it (symlinks), block it (FIFOs,
sockets, devices, directories named like logs), flood its log, or make it
delete anything outside it. Each test checks the exact lines delivered too.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import socket
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer
from tests.support.store import wait_for
from tests.test_e2e_endpoints import samples, value
from tests.test_e2e_retention import deletions as logged

pytestmark = pytest.mark.e2e

SECRET_MARK = "TOP-SECRET-VALUE"
#: A secret that would ship as well-formed records if it were ever read.
SECRET = (
    b"".join(b'{"seq": %d, "msg": "%s"}\n' % (-1 - n, SECRET_MARK.encode()) for n in range(50))
    + b"root:$6$hash:19000:0:99999:7:::\n"
)


def secret_file(tmp_path: Path) -> Path:
    """``secret/shadow.txt`` beside the logs directory, readable by its owner only."""
    directory = tmp_path / "secret"
    directory.mkdir()
    path = directory / "shadow.txt"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def assert_no_secret(shipping: Shipping) -> None:
    leaked = [r for r in shipping.records() if SECRET_MARK in orjson.dumps(r).decode()]
    assert not leaked, f"secret content shipped: {leaked[:3]}"


def write_in_new_files(shipping: Shipping, first_seq: int, files: int, lines: int) -> int:
    """Write ``lines`` lines to each of ``files`` new files, one at a time, each shipped
    before the next is created: every one takes a scan to find, so at least ``files``
    scans run. Returns the next seq."""
    seq = first_seq
    for n in range(files):
        run_writer(shipping.logs / f"more-{first_seq}-{n}.log", seq, lines)
        seq += lines
        shipping.wait_delivered(seq)
    return seq


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def once_each(shipping: Shipping, message: str) -> dict[str, int]:
    """How many times ``message`` was logged, by the file name it names."""
    counts: dict[str, int] = {}
    for entry in logged(shipping, message):
        name = Path(entry["path"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_symlinks_out_of_the_logs_directory_are_never_shipped(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store)
    logs = shipping.logs
    secret = secret_file(tmp_path)
    (logs / "evil.log").symlink_to("../secret/shadow.txt")
    (logs / "environ.log").symlink_to("/proc/self/environ")
    (logs / "alias.log").symlink_to("app.log")  # inside the directory: one file, two names
    run_writer(logs / "app.log", 0, 500)
    with shipping.daemon:
        shipping.wait_started()
        pid = shipping.daemon.pid
        assert pid is not None
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        # Created while running (a change event opens a new file at once): a link to a
        # link, and one spelled with "..".
        (secret.parent / "hop").symlink_to(secret)
        (logs / "chain.log").symlink_to("../secret/hop")
        (logs / "dots.log").symlink_to("../logs/../secret/./shadow.txt")
        next_seq = write_in_new_files(shipping, 500, files=4, lines=250)
        cpu_used = cpu_seconds(pid) - cpu_before
        wall = time.monotonic() - wall_before
        warned = once_each(shipping, "symlink leads outside")
        assert warned == {"evil.log": 1, "environ.log": 1, "chain.log": 1, "dots.log": 1}
        [evil] = [e for e in logged(shipping, "symlink leads outside") if "evil" in e["path"]]
        assert evil["target"] == str(secret)
        metrics = samples(shipping)
        assert value(metrics, "shipper_files_refused_total", reason="symlink_outside") == 4
        # /proc/self/environ never opened: no "truncated" loop, no burnt CPU.
        assert logged(shipping, "file truncated in place") == []
        print(f"daemon CPU {cpu_used:.2f} s in {wall:.1f} s")
        assert cpu_used < 0.6 * wall
        shipping.finish(next_seq)
    assert_no_secret(shipping)
    assert secret.read_bytes() == SECRET


class HealthPoller:
    """``GET /healthz`` over and over with a 0.5 s timeout, from a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=0.5) as answer:
                    answer.read()
                    assert answer.status == 200
                self.answers += 1
            except Exception as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self._stop.wait(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[HealthPoller]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def test_fifos_sockets_devices_and_directories_never_block(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store, include="*.log*")
    logs = shipping.logs
    os.mkfifo(logs / "early.log")  # there before the start
    run_writer(logs / "app.log", 0, 500)
    listener = socket.socket(socket.AF_UNIX)
    with shipping.daemon, contextlib.closing(listener):
        shipping.wait_started()
        health = HealthPoller(shipping.health_url("/healthz"))
        with health.running():
            wait_for(lambda: health.answers > 0, 10, message="/healthz answers")
            # Created while running: a change event names each at once. A FIFO used to
            # freeze the event loop in a blocking open() until someone wrote to it.
            os.mkfifo(logs / "app.log.2")
            listener.bind(str(logs / "sock.log"))
            (logs / "dir.log").mkdir()
            (logs / "dir.log" / "inside.log").write_bytes(b"not matched: one level down\n")
            expected_kinds = {"early.log": "fifo", "app.log.2": "fifo"}
            expected_kinds |= {"sock.log": "socket", "dir.log": "directory"}
            if os.geteuid() == 0:
                os.mknod(logs / "tty.log", stat.S_IFCHR | 0o600, os.makedev(1, 3))
                expected_kinds["tty.log"] = "char_device"
            (logs / "app.log").rename(logs / "app.log.1")
            run_writer(logs / "app.log", 500, 500)
            shipping.wait_delivered(1000)
            next_seq = write_in_new_files(shipping, 1000, files=4, lines=250)
        print(
            f"/healthz: {health.answers} answers, slowest {health.slowest:.3f} s,"
            f" {len(health.failures)} failures"
        )
        assert health.failures == [] and health.answers > 10
        warned = logged(shipping, "not a regular file")
        assert {Path(w["path"]).name: w["kind"] for w in warned} == expected_kinds
        assert len(warned) == len(expected_kinds), "one warning each, not one per scan"
        metrics = samples(shipping)
        for kind in set(expected_kinds.values()):
            count = sum(1 for k in expected_kinds.values() if k == kind)
            assert value(metrics, "shipper_files_refused_total", reason=kind) == count, kind
        # No one holds the FIFOs open for reading: a writer would get ENXIO.
        for name in ("early.log", "app.log.2"):
            with pytest.raises(OSError) as caught:
                os.open(logs / name, os.O_WRONLY | os.O_NONBLOCK)
            assert caught.value.errno == errno.ENXIO
        shipping.finish(next_seq)


def test_kubernetes_layout_ships_through_symlink_targets(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """``/var/log/containers/<pod>_<ns>_<container>-<id>.log`` are symlinks into
    ``/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log``. The kubelet rotates
    inside the pod directory: ``0.log`` is renamed ``0.log.<timestamp>`` and the runtime
    reopens a new ``0.log``, the link unchanged; the rotation before the last is
    compressed. A restarted container writes ``1.log``, under a new link."""
    pods = tmp_path / "pods"
    shipping = Shipping(
        tmp_path, **store, include="*.log", source_toml=f'symlink_targets = ["{pods}"]\n'
    )
    containers = shipping.logs
    app = pods / "ns_app-1_0f1e2d3c" / "app"
    sidecar = pods / "ns_app-1_0f1e2d3c" / "sidecar"
    app.mkdir(parents=True)
    sidecar.mkdir()
    (containers / "app-1_ns_app-c0ffee.log").symlink_to(app / "0.log")
    (containers / "app-1_ns_sidecar-beef.log").symlink_to(sidecar / "0.log")
    secret = secret_file(tmp_path)
    (containers / "evil_ns_x-1.log").symlink_to(secret)  # still out of bounds
    with shipping.daemon:
        shipping.wait_started()  # the links dangle until the containers write
        run_writer(app / "0.log", 0, 2000, rate=4000)
        run_writer(sidecar / "0.log", 2000, 500)
        (app / "0.log").rename(app / "0.log.20261125-101500")
        run_writer(app / "0.log", 2500, 1500, rate=4000)
        shipping.wait_delivered(4000)
        wait_for(
            lambda: logged(shipping, "finished rotated file"), 30, message="rotated file finished"
        )
        (app / "0.log").rename(app / "0.log.20261125-101600")
        # The kubelet compresses the older rotation, and deletes the plain file.
        older = app / "0.log.20261125-101500"
        (app / "0.log.20261125-101500.gz").write_bytes(gzip.compress(older.read_bytes()))
        older.unlink()
        run_writer(app / "0.log", 4000, 500)
        shipping.wait_delivered(4500)
        # The container restarts: a new file, a new link; the old link goes.
        (containers / "app-1_ns_app-d00d.log").symlink_to(app / "1.log")
        (containers / "app-1_ns_app-c0ffee.log").unlink()
        run_writer(app / "1.log", 4500, 500)
        shipping.wait_delivered(5000)
        assert once_each(shipping, "symlink leads outside") == {"evil_ns_x-1.log": 1}
        metrics = samples(shipping)
        assert value(metrics, "shipper_files_refused_total", reason="symlink_outside") == 1
        shipping.finish(5000)
    assert_no_secret(shipping)
    paths = {r["file_path"] for r in shipping.records() if "file_path" in r}
    assert not any("secret" in p for p in paths)


def retention_toml(high_watermark: float) -> str:
    return (
        "[retention]\nquiet_secs = 1\n"
        "[disk]\ncheck_interval_secs = 0.5\n"
        f"high_watermark = {high_watermark}\ncritical_watermark = 1.0\n"
    )


def test_retention_never_deletes_through_a_directory_symlink(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(
        tmp_path, **store, include="**/app.log*", extra_toml=retention_toml(high_watermark=1.0)
    )
    logs = shipping.logs
    run_writer(logs / "app.log", 0, 1000)
    shipping.daemon.start()
    try:
        shipping.wait_delivered(1000)
        (logs / "app.log").rename(logs / "app.log.1")
        run_writer(logs / "app.log", 1000, 1000)
        shipping.wait_delivered(2000)
        assert shipping.daemon.terminate() == ExitCode.OK

        # The shipped rotation moves out of the logs directory, and a directory link
        # inside it leads there: the very file retention would delete, one link away.
        outside = tmp_path / "outside"
        outside.mkdir()
        (logs / "app.log.1").rename(outside / "app.log.1")
        (logs / "archive").symlink_to("../outside")
        # A real directory below the base: still retention's to clean.
        (logs / "old").mkdir()
        shipping.reconfigure(extra_toml=retention_toml(high_watermark=0.0))
        shipping.daemon.start()
        (logs / "app.log").rename(logs / "old" / "app.log.2")
        run_writer(logs / "app.log", 2000, 1000)
        shipping.wait_delivered(3000)
        # Oldest first: app.log.1 would have gone before app.log.2, were it reachable.
        shipping._wait(
            lambda: not (logs / "old" / "app.log.2").exists(), 60, "old/app.log.2 deleted"
        )
        deleted = [Path(d["path"]) for d in logged(shipping, "deleted shipped rotated file")]
        assert deleted == [logs / "old" / "app.log.2"]
        assert (outside / "app.log.1").exists()
        shipping.finish(3000)
    finally:
        shipping.daemon.close()
