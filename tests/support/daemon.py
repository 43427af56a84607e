"""The real daemon as a subprocess: ``python -m shipper run -c CONFIG``."""

from __future__ import annotations

__all__ = ["PROJECT_ROOT", "ShipperProcess", "child_env", "live_daemons", "run_cli"]

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.managed import Managed

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Host settings that would make boto3 in the daemon use other credentials or another
# endpoint than the test store. Dropped from the inherited environment (not from ``extra``).
_HOST_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
)

_live: weakref.WeakSet[ShipperProcess] = weakref.WeakSet()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` (minus host AWS profile/endpoint settings) merged with ``extra``.

    The working tree is put first on ``PYTHONPATH`` so ``-m shipper`` is this checkout,
    and output is unbuffered so the log file is current when a test reads it.
    """
    env = {k: v for k, v in os.environ.items() if k not in _HOST_AWS_VARS}
    pythonpath = [str(PROJECT_ROOT)]
    if env.get("PYTHONPATH"):
        pythonpath.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m shipper ARGS``, output captured as text; the exit code is not checked."""
    return subprocess.run(
        [sys.executable, "-m", "shipper", *args],
        env=child_env(env),
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"<no log file {path}>"
    return "\n".join(text.splitlines()[-lines:])


class ShipperProcess(Managed):
    """``python -m shipper run -c CONFIG`` with stdout+stderr appended to ``log_dir/NAME.log``.

    The log file is appended to across restarts, each run headed by a marker line, so a
    failing test can show the whole history with ``log_tail``. The process runs in its
    own session with ``cwd`` = ``cwd`` or ``log_dir``; signals go to its PID only.
    """

    def __init__(
        self,
        config_path: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        name: str = "shipper",
        cwd: Path | None = None,
        extra_args: Sequence[str] = (),
        subcommand: str = "run",
    ) -> None:
        self.config_path = Path(config_path)
        self.subcommand = subcommand
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{name}.log"
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else self.log_dir
        self.extra_args = list(extra_args)
        self.name = name
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        _live.add(self)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shipper",
            self.subcommand,
            "-c",
            str(self.config_path),
            *self.extra_args,
            # A run to investigate can ask for the daemon's debug log.
            *(
                ["--log-level", level]
                if (level := os.environ.get("SHIPPER_TEST_LOG_LEVEL"))
                else []
            ),
        ]

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        if self.is_running():
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        self.starts += 1
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(
                f"\n=== test harness: {self.name} start #{self.starts} at {stamp} ===\n".encode()
            )
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon's PID (e.g. a second SIGTERM, or SIGINT)."""
        proc = self._require()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the daemon to exit by itself; on timeout SIGKILL it and fail with the log."""
        proc = self._require()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(
                f"{self.name} (pid {proc.pid}) still running after {timeout}s; killed it."
                f" Log {self.log_path}:\n{self.log_tail()}"
            ) from None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, wait up to ``timeout`` s, return the exit code (no check of its value).

        If the daemon has not exited by then it is SIGKILLed and ``AssertionError`` raised
        with the tail of its log. An already-exited daemon just returns its code.
        """
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill9(self) -> int:
        """SIGKILL (a crash: no drain, no cleanup) and reap; returns the exit code."""
        proc = self._require()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()

    def log_tail(self, n: int = 60) -> str:
        return _tail(self.log_path, n)

    def log_text(self) -> str:
        """The whole log, all runs."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """SIGKILL the daemon if it is still running (for teardown after a failed test)."""
        if self.is_running():
            self.kill9()
        _live.discard(self)

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else f"exit {self.returncode}"
        return f"<ShipperProcess {self.name} {state} config={self.config_path}>"


def live_daemons() -> list[ShipperProcess]:
    """Every daemon made and not closed yet (running or not)."""
    return list(_live)


@atexit.register
def _kill_leftovers() -> None:
    for daemon in list(_live):
        with contextlib.suppress(Exception):
            daemon.close()
