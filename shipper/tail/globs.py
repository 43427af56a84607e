"""Finds the files the sources' include/exclude globs select, and the directories to watch.

The logs directory is untrusted input. A path the globs match is selected only if
it really is a regular file in a directory the source may read: the fixed base
directory of one of its include globs, or one of its ``symlink_targets``. A
symlink's whole chain is resolved and its final real path judged. Anything else
(a symlink out of those directories, a FIFO, a socket, a device, a directory
named like a log) is left alone, reported once by :class:`Refusals`.

``**`` never descends through a directory symlink: a link back up the tree
would make the walk endless.
"""

from __future__ import annotations

__all__ = [
    "REFUSAL_WARNINGS_PER_WINDOW",
    "REFUSAL_WINDOW_SECS",
    "Refusals",
    "SourceRoots",
    "discover",
    "events_see_every_write",
    "find_by_inode",
    "glob_base",
    "is_excluded",
    "real_parents",
    "roots_of",
    "selected",
    "source_of",
    "watch_roots",
]

import logging
import math
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from shipper.config import SourceSettings
from shipper.errors import RefusalReason
from shipper.files.confined import file_kind, root_of
from shipper.files.durable import printable_path, regular_files
from shipper.tail.decompress import is_compressed

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


def _has_magic(part: str) -> bool:
    return bool(_GLOB_CHARS & set(part))


def glob_base(pattern: str) -> str:
    """The fixed directory an include glob starts from: its components before the first
    wildcard, and never its last component (``/var/log/app.log`` starts at ``/var/log``)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


@dataclass(frozen=True, slots=True)
class SourceRoots:
    """Where one source's files may really live, each directory resolved."""

    #: The base directories of the include globs, spelled as in the config: the
    #: only places retention deletes in (and never through a symlink below them).
    bases: tuple[str, ...]
    #: The bases resolved, and the ``symlink_targets``: where a symlink may lead.
    allowed: tuple[str, ...]


def roots_of(sources: Mapping[str, SourceSettings]) -> dict[str, SourceRoots]:
    """Each source's roots, resolved now (a base may be a symlink an operator moves)."""
    roots: dict[str, SourceRoots] = {}
    for name, source in sources.items():
        bases = tuple(dict.fromkeys(glob_base(p) for p in source.include))
        allowed = [os.path.realpath(b) for b in bases]
        allowed += [os.path.realpath(t) for t in source.symlink_targets]
        roots[name] = SourceRoots(bases, tuple(dict.fromkeys(allowed)))
    return roots


@dataclass(frozen=True, slots=True)
class _Refused:
    source: str
    reason: RefusalReason
    #: Where a symlink really leads; None for a file that is not a regular one.
    target: str | None


#: At most this many refusals are logged per :data:`REFUSAL_WINDOW_SECS`; the rest are
#: counted, and the next line logged says how many were left out. A writer creating
#: and deleting links as fast as it can must not flood the daemon's log.
REFUSAL_WARNINGS_PER_WINDOW = 20
REFUSAL_WINDOW_SECS = 60.0


class Refusals:
    """Paths the globs match that are never read: each logged once (WARNING) and counted.

    A path is reported again only when it becomes another kind of refusal, or
    after it was gone from a scan: memory holds the paths refused now, no more.
    The counters are ``refused_<reason>``, for ``shipper_files_refused_total``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counters: Counter[str] = Counter()
        self._current: dict[str, _Refused] = {}
        self._clock = clock
        self._window_start = -math.inf
        self._logged_in_window = 0
        self._left_out = 0

    def update(self, refused: Mapping[str, _Refused]) -> None:
        """Take one whole scan's refusals: report the new ones, forget the gone ones."""
        for path, why in sorted(refused.items()):
            before = self._current.get(path)
            if before is None or before.reason != why.reason:
                self._report(path, why)
        self._current = dict(refused)

    def _report(self, path: str, why: _Refused) -> None:
        self.counters[f"refused_{why.reason}"] += 1
        now = self._clock()
        if now - self._window_start >= REFUSAL_WINDOW_SECS:
            self._window_start, self._logged_in_window = now, 0
        if self._logged_in_window >= REFUSAL_WARNINGS_PER_WINDOW:
            self._left_out += 1
            return
        self._logged_in_window += 1
        fields: dict[str, object] = {
            "path": printable_path(path),
            "source": why.source,
            "suppressed_since_last": self._left_out,
        }
        self._left_out = 0
        if why.target is not None:
            log.warning(
                "symlink leads outside the directories its source may read; not shipped"
                " (allow its target with the source's symlink_targets)",
                extra={**fields, "target": printable_path(why.target)},
            )
        else:
            log.warning("not a regular file; never opened", extra={**fields, "kind": why.reason})


def is_excluded(path: str, exclude: Iterable[str]) -> bool:
    """Patterns with a ``/`` match the whole path; others match the file name alone (``*.gz``)."""
    name = os.path.basename(path)
    return any(fnmatchcase(path if "/" in p else name, p) for p in exclude)


def discover(
    sources: Mapping[str, SourceSettings],
    *,
    compressed: bool = False,
    refusals: Refusals | None = None,
) -> list[tuple[str, str]]:
    """``(source name, path)`` for every regular file selected; the first source (by name) wins.

    Compressed files are never tailed as text (``app.log*`` matches ``app.log.2.gz``):
    they are read only to finish a rotated file compressed before it was finished.
    ``compressed=True`` lists them too (retention deletes them). Paths refused
    (see the module's notes) are left out; ``refusals``, if given, hears of every
    one, and is to be given each scan with the same ``compressed``.
    """
    roots = roots_of(sources)
    found: list[tuple[str, str]] = []
    # One glob lists each path once: only several can meet (10 MiB less at once,
    # with 100,000 files, than a table of every path found).
    looked_at: set[str] | None = None
    if sum(len(source.include) for source in sources.values()) > 1:
        looked_at = set()
    refused: dict[str, _Refused] = {}
    resolved: dict[str, str] = {}
    for name in sorted(sources):
        source = sources[name]
        for pattern in source.include:
            for path in expand(pattern):
                if looked_at is not None:
                    if path in looked_at:
                        continue
                    looked_at.add(path)
                if is_excluded(path, source.exclude) or (is_compressed(path) and not compressed):
                    if looked_at is not None:
                        looked_at.discard(path)  # another source's globs may take it
                    continue
                verdict = _judge(path, name, roots[name].allowed, resolved)
                if verdict == "file":
                    found.append((name, path))
                elif isinstance(verdict, _Refused):
                    refused[path] = verdict
    if refusals is not None:
        refusals.update(refused)
    return found


def directories(sources: Mapping[str, SourceSettings]) -> set[str]:
    """The directories the include globs' files are in, or would be.

    Only the directory part of each glob is expanded, not the file names: O(files)
    only for a ``**`` glob. Nothing is judged, and measuring a directory with no
    log in it, or with a refused name, is harmless.
    """
    found: set[str] = set()
    for source in sources.values():
        for pattern in source.include:
            parent = os.path.dirname(pattern) or "."
            if "**" in pattern:
                found.update(os.path.dirname(path) or "." for path in expand(pattern))
            elif not _has_magic(parent):
                if os.path.isdir(parent):
                    found.add(parent)
            else:
                found.update(path for path in expand(parent) if os.path.isdir(path))
    return found


def selected(
    paths: Iterable[tuple[str, str]], roots: Mapping[str, SourceRoots]
) -> list[tuple[str, str]]:
    """The ``(source, path)`` pairs that are regular files where their source may read.

    For paths looked at alone (change events named them): what is refused is left
    to the next :func:`discover`, which reports it.
    """
    resolved: dict[str, str] = {}
    return [
        (source, path)
        for source, path in paths
        if source in roots and _judge(path, source, roots[source].allowed, resolved) == "file"
    ]


def _judge(
    path: str, source: str, allowed: Sequence[str], resolved: dict[str, str]
) -> _Refused | Literal["file", "gone"]:
    """``"file"`` for a regular file where the source may read, else why not.

    A file that is gone, or a dangling or looping symlink into the allowed
    directories, is ``"gone"``: left out without a word, as before.
    ``resolved`` caches each directory's real path for one scan.
    """
    directory, name = os.path.split(path)
    real_dir = resolved.get(directory)
    if real_dir is None:
        real_dir = resolved[directory] = os.path.realpath(directory or ".")
    try:
        st = os.lstat(path)
    except OSError:
        return "gone"
    link = stat.S_ISLNK(st.st_mode)
    real = os.path.realpath(path) if link else os.path.join(real_dir, name)
    if root_of(real, allowed) is None:
        return _Refused(source, "symlink_outside", real)
    if link:
        try:
            st = os.stat(path)
        except OSError:
            return "gone"
    kind = file_kind(st.st_mode)
    return "file" if kind is None else _Refused(source, kind, None)


def expand(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, sorted, as ``glob.glob(pattern, recursive=True)``
    spells them, except that ``**`` never descends through a symlink."""
    base = glob_base(pattern)
    parts = Path(pattern).parts[len(Path(base).parts) if base != "." else 0 :]
    found = list(_expand(base, list(parts)))
    found.sort()
    if "**" in parts:  # the one part that can reach a path twice (``**/**``)
        found = list(dict.fromkeys(found))
    return found


def _expand(base: str, parts: list[str]) -> Iterator[str]:
    # A stack, not recursion: an attacker's deep tree must not exhaust Python's stack.
    stack: list[tuple[str, int]] = [(base, 0)]
    while stack:
        directory, at = stack.pop()
        part, last = parts[at], at == len(parts) - 1
        if part == "**":
            below = list(_tree(directory))
            if last:
                yield from (path for path, is_dir in below if not is_dir)
            else:
                stack.append((directory, at + 1))
                stack.extend((path, at + 1) for path, is_dir in below if is_dir)
        elif _has_magic(part):
            for name in _names(directory, part):
                path = _join(directory, name)
                if last:
                    yield path
                elif os.path.isdir(path):
                    stack.append((path, at + 1))
        else:
            path = _join(directory, part)
            if last and os.path.lexists(path):
                yield path
            elif not last and os.path.isdir(path):
                stack.append((path, at + 1))


def _join(directory: str, name: str) -> str:
    return name if directory == "." else os.path.join(directory, name)


def _names(directory: str, part: str) -> Iterator[str]:
    """Names in ``directory`` matching one glob component; hidden ones only if it says so.

    One at a time, as listed: a list of every name in a directory of 100,000 files
    would be held (7 MiB) while their paths are made. A directory that cannot be
    listed, or not to its end, gives what was listed.
    """
    hidden = part.startswith(".")
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if (hidden or not name.startswith(".")) and fnmatchcase(name, part):
                    yield name
    except OSError:
        return


def _tree(directory: str) -> Iterator[tuple[str, bool]]:
    """``(path, is a directory)`` for everything below ``directory`` but hidden names,
    never through a symlink (one to a directory is not a directory here)."""
    pending = [directory]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                found = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError:
            continue
        for name, is_dir in found:
            if name.startswith("."):
                continue
            path = _join(current, name)
            yield path, is_dir
            if is_dir:
                pending.append(path)


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
    roots = {Path(glob_base(p)) for s in sources.values() for p in s.include}
    # A root inside another is covered by the outer one's events only when recursive;
    # keep them all, watchfiles de-duplicates nothing but the cost is small.
    return sorted(root for root in roots if root.is_dir())


def events_see_every_write(sources: Mapping[str, SourceSettings]) -> bool:
    """Whether change events on :func:`watch_roots` name every file the globs select.

    They do when no include glob has a wildcard above the file's own name (a new
    subdirectory is not watched) and no source follows symlinks to elsewhere (a
    write there is an event of another directory).
    """
    return all(
        not source.symlink_targets
        and all(Path(glob_base(p)) == Path(p).parent for p in source.include)
        for source in sources.values()
    )


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
