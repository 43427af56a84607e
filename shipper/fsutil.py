"""Durable file writes: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

__all__ = ["fsync_dir", "write_atomic", "write_synced"]

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new name in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and fsync it (no rename)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_synced(tmp, data)
    tmp.replace(path)
    fsync_dir(path.parent)
