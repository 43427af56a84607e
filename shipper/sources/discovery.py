"""Finds the files the sources' include/exclude globs select, and the directories to watch."""

from __future__ import annotations

__all__ = [
    "discover",
    "find_by_inode",
    "is_excluded",
    "real_parents",
    "source_of",
    "watch_roots",
]

import glob
import os
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path

from shipper.config import SourceSettings
from shipper.fsutil import regular_files
from shipper.sources.compressed import is_compressed

_GLOB_CHARS = frozenset("*?[")


def is_excluded(path: str, exclude: Iterable[str]) -> bool:
    """Patterns with a ``/`` match the whole path; others match the file name alone (``*.gz``)."""
    name = os.path.basename(path)
    return any(fnmatchcase(path if "/" in p else name, p) for p in exclude)


def discover(
    sources: Mapping[str, SourceSettings], *, compressed: bool = False
) -> list[tuple[str, str]]:
    """``(source name, path)`` for every regular file selected; the first source (by name) wins.

    Compressed files are never tailed as text (``app.log*`` matches ``app.log.2.gz``):
    they are read only to finish a rotated file compressed before it was finished.
    ``compressed=True`` lists them too (retention deletes them).
    """
    found: dict[str, str] = {}
    for name in sorted(sources):
        source = sources[name]
        for pattern in source.include:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if path in found or is_excluded(path, source.exclude):
                    continue
                if is_compressed(path) and not compressed:
                    continue
                if os.path.isfile(path):
                    found[path] = name
    return [(source, path) for path, source in found.items()]


def source_of(sources: Mapping[str, SourceSettings], path: str) -> str | None:
    """The source (first by name) whose globs select ``path``, judged from the name alone.

    For change events, before any scan. ``**`` patterns are left to the scan.
    """
    for name in sorted(sources):
        source = sources[name]
        if is_excluded(path, source.exclude) or is_compressed(path):
            continue
        if any("**" not in p and fnmatchcase(path, p) for p in source.include):
            return name
    return None


def watch_roots(sources: Mapping[str, SourceSettings]) -> list[Path]:
    """The existing directories above every include glob, for change events."""
    roots: set[Path] = set()
    for source in sources.values():
        for pattern in source.include:
            parts = Path(pattern).parts
            fixed = []
            for part in parts[:-1]:
                if _GLOB_CHARS & set(part):
                    break
                fixed.append(part)
            root = Path(*fixed) if fixed else Path()
            if root.is_dir():
                roots.add(root)
    # A root inside another is covered by the outer one's events only when recursive;
    # keep them all, watchfiles de-duplicates nothing but the cost is small.
    return sorted(roots)


def find_by_inode(
    directories: Iterable[Path], wanted: set[tuple[int, int]]
) -> list[tuple[str, tuple[int, int]]]:
    """Regular files in ``directories`` (not below them) whose (device, inode) is wanted."""
    found: list[tuple[str, tuple[int, int]]] = []
    for path, st in regular_files(directories):
        inode = (st.st_dev, st.st_ino)
        if inode in wanted:
            found.append((path, inode))
    return found


def real_parents(paths: Iterable[str]) -> set[Path]:
    """The directories the files really live in, through any symlinks."""
    return {Path(os.path.realpath(path)).parent for path in paths}
