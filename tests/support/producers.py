"""Start the log writer (tests/support/writer.py) as a separate process, like a real app."""

from __future__ import annotations

__all__ = ["WRITER", "run_writer", "start_writer", "wait_writer", "writer_command"]

import subprocess
import sys
from pathlib import Path

WRITER = Path(__file__).with_name("writer.py")


def writer_command(
    path: Path,
    start_seq: int,
    count: int,
    rate: float = 0,
    handler: str = "file",
    *,
    max_bytes: int = 0,
    backup_count: int = 0,
    pad: int = 0,
) -> list[str]:
    cmd = [
        sys.executable,
        str(WRITER),
        "--path",
        str(path),
        "--start-seq",
        str(start_seq),
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--handler",
        handler,
        "--pad",
        str(pad),
    ]
    if handler == "rotating":
        cmd += ["--max-bytes", str(max_bytes), "--backup-count", str(backup_count)]
    return cmd


def start_writer(
    path: Path,
    start_seq: int,
    count: int,
    rate: float = 0,
    handler: str = "file",
    *,
    max_bytes: int = 0,
    backup_count: int = 0,
    pad: int = 0,
) -> subprocess.Popen[str]:
    """Start ``writer.py``; its stdout+stderr are captured (``wait_writer`` shows them)."""
    return subprocess.Popen(
        writer_command(
            path,
            start_seq,
            count,
            rate,
            handler,
            max_bytes=max_bytes,
            backup_count=backup_count,
            pad=pad,
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_writer(proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait for a writer started by ``start_writer``; fail unless it exited 0."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(
            f"writer {proc.args!r} still running after {timeout}s:\n{output}"
        ) from None
    if proc.returncode != 0:
        raise AssertionError(f"writer {proc.args!r} exited {proc.returncode}:\n{output}")


def run_writer(
    path: Path,
    start_seq: int,
    count: int,
    rate: float = 0,
    handler: str = "file",
    *,
    max_bytes: int = 0,
    backup_count: int = 0,
    pad: int = 0,
    timeout: float = 120,
) -> None:
    """``start_writer`` + ``wait_writer``: write the lines and return once they are on disk."""
    wait_writer(
        start_writer(
            path,
            start_seq,
            count,
            rate,
            handler,
            max_bytes=max_bytes,
            backup_count=backup_count,
            pad=pad,
        ),
        timeout,
    )
