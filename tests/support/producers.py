"""Start the log writer (tests/support/writer.py) as a separate process, like a real app."""

from __future__ import annotations

__all__ = [
    "WRITER",
    "WriterOptions",
    "run_writer",
    "start_writer",
    "wait_writer",
    "writer_command",
]

import subprocess
import sys
from pathlib import Path
from typing import TypedDict

if sys.version_info >= (3, 11):
    from typing import Unpack
else:
    from typing_extensions import Unpack

WRITER = Path(__file__).with_name("writer.py")


class WriterOptions(TypedDict, total=False):
    #: Lines per second; 0 (the default) writes as fast as possible.
    rate: float
    #: "file" (logging.FileHandler), "rotating" (RotatingFileHandler), "timed"
    #: (TimedRotatingFileHandler, a new file every second) or "watched"
    #: (WatchedFileHandler, which reopens a file logrotate moved).
    handler: str
    #: RotatingFileHandler's maxBytes and backupCount (needed with handler="rotating").
    max_bytes: int
    backup_count: int
    #: Extra filler characters in each message.
    pad: int
    #: Delete the file after this many lines and go on writing into it.
    unlink_after: int


def writer_command(
    path: Path, start_seq: int, count: int, **options: Unpack[WriterOptions]
) -> list[str]:
    handler = options.get("handler", "file")
    cmd = [sys.executable, str(WRITER), "--path", str(path)]
    cmd += ["--start-seq", str(start_seq), "--count", str(count)]
    cmd += ["--rate", str(options.get("rate", 0)), "--handler", handler]
    cmd += ["--pad", str(options.get("pad", 0))]
    cmd += ["--unlink-after", str(options.get("unlink_after", -1))]
    if handler == "rotating":
        cmd += ["--max-bytes", str(options.get("max_bytes", 0))]
        cmd += ["--backup-count", str(options.get("backup_count", 0))]
    return cmd


def start_writer(
    path: Path, start_seq: int, count: int, **options: Unpack[WriterOptions]
) -> subprocess.Popen[str]:
    """Start ``writer.py``; its stdout+stderr are captured (``wait_writer`` shows them)."""
    return subprocess.Popen(
        writer_command(path, start_seq, count, **options),
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


def run_writer(path: Path, start_seq: int, count: int, **options: Unpack[WriterOptions]) -> None:
    """``start_writer`` + ``wait_writer``: write the lines and return once they are on disk."""
    wait_writer(start_writer(path, start_seq, count, **options))
