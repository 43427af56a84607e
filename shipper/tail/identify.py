"""Opens a discovered path and decides which file it is: a known one, or a new one."""

from __future__ import annotations

__all__ = [
    "ByHead",
    "Identified",
    "copies_found_together",
    "end_of_last_line",
    "find_copies",
    "identify",
    "identify_open",
    "still_a_copy",
]

import functools
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shipper.files.confined import open_log_file
from shipper.files.durable import regular_files
from shipper.files.fingerprint import Fingerprint, head_of
from shipper.files.markers import MARKER_BYTES, Pread, check_markers
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.decompress import is_compressed

#: Known files by the SHA-256 of their first bytes, to recognise copies of them.
ByHead = Mapping[str, Sequence[Checkpoint]]


@dataclass(slots=True)
class Identified:
    fd: int
    fingerprint: Fingerprint
    #: The checkpoint it resumes from, or None for a never-seen file.
    known: Checkpoint | None
    size: int
    #: A known file rewritten in place with the same first line: read it from byte 0.
    rewritten: bool = False
    #: A new file (another inode) holding a known file's bytes: a copy of it, such as
    #: copytruncate's. It is continued from where the known file was read up to.
    copy_of: Checkpoint | None = None
    #: The copy is still shorter than the known file's markers, and so far the same
    #: bytes as that file: a copy being written. Not read until it can be told.
    copy_in_progress: bool = False


def identify(
    path: str,
    *,
    fingerprint_bytes: int,
    candidates: Mapping[tuple[int, int], Sequence[Checkpoint]],
    by_head: ByHead | None = None,
    roots: Sequence[str] | None = None,
    resolved: dict[str, str] | None = None,
) -> Identified | None:
    """Open ``path`` and identify it (see :func:`identify_open`).

    ``roots``: where the file may really be, through symlinks (see
    :func:`~shipper.files.confined.open_log_file`); without, ``path`` must not be a symlink.
    ``resolved``: directories' real paths, cached for one scan.
    Returns None (nothing held open) while the file's head is still incomplete.
    Raises OSError when the file cannot be opened (vanished, permissions), and
    :class:`~shipper.errors.RefusedFileError` (an OSError) when it must not be.
    """
    fd = open_log_file(path, roots=roots, resolved=resolved)
    try:
        found = identify_open(
            fd, fingerprint_bytes=fingerprint_bytes, candidates=candidates, by_head=by_head
        )
    except BaseException:
        os.close(fd)
        raise
    if found is None:
        os.close(fd)
    return found


def identify_open(
    fd: int,
    *,
    fingerprint_bytes: int,
    candidates: Mapping[tuple[int, int], Sequence[Checkpoint]],
    by_head: ByHead | None = None,
) -> Identified | None:
    """Match an open file against known files on the same device and inode.

    A known file matches only if its first bytes still hash the same and the
    bytes before its last read positions (its markers) are still there: a
    reused inode or a truncated-and-rewritten file is a new file, never seeked
    into. A new file that starts like a known file on another inode, with the
    same bytes at its markers, is a copy of it (``by_head`` lists the known files).
    Returns None while the file's head is incomplete; ``fd`` stays the caller's then.
    """
    st = os.fstat(fd)
    same_inode = candidates.get((st.st_dev, st.st_ino), ())
    longest = max([fingerprint_bytes, *(c.fingerprint.head_len for c in same_inode)])
    head = os.pread(fd, longest, 0)

    def pread(length: int, offset: int) -> bytes:
        return os.pread(fd, length, offset)

    matching = [c for c in same_inode if c.fingerprint.matches_head(head)]
    if matching:
        latest = max(matching, key=lambda c: c.fingerprint.generation)
        if st.st_size >= latest.offset and check_markers(latest.markers, pread) is not False:
            return Identified(fd, latest.fingerprint, latest, st.st_size)
        # Same first line, yet shorter than what was read of it, or other bytes where
        # we read: rewritten in place. A new generation gets new keys, so no range is
        # confused with the old.
        fingerprint = replace(latest.fingerprint, generation=latest.fingerprint.generation + 1)
        return Identified(fd, fingerprint, None, st.st_size, rewritten=True)
    identifying = head_of(head, fingerprint_bytes)
    if identifying is None:
        return None
    fingerprint = Fingerprint(
        dev=st.st_dev,
        ino=st.st_ino,
        head_len=len(identifying),
        head_sha256=hashlib.sha256(identifying).hexdigest(),
    )
    copied = (by_head or {}).get(fingerprint.head_sha256, ())
    copy_of, in_progress = _original_of(fingerprint, copied, pread, st.st_size)
    return Identified(
        fd, fingerprint, None, st.st_size, copy_of=copy_of, copy_in_progress=in_progress
    )


def _original_of(
    fingerprint: Fingerprint, known: Sequence[Checkpoint], pread: Pread, size: int
) -> tuple[Checkpoint | None, bool]:
    """The known file (on another inode) this new one is a copy of, if any.

    Starting the same is not enough: the bytes at the known file's markers must be
    there too. A file too short to check is compared with the known file itself,
    where it still is: the same bytes there make it a copy being written (True
    second); other bytes, or no file to compare with, make it a new file (a
    service writing the same banner line again is common).
    """
    best: tuple[bool, int, Checkpoint] | None = None
    for checkpoint in known:
        original = checkpoint.fingerprint
        if (original.dev, original.ino) == (fingerprint.dev, fingerprint.ino):
            continue
        if original.head_len != fingerprint.head_len:
            continue
        verdict = check_markers(checkpoint.markers, pread)
        if verdict is False or (verdict is None and not _prefix_of(checkpoint, pread, size)):
            continue
        rank = (verdict is True, checkpoint.offset, checkpoint)
        if best is None or rank[:2] > best[:2]:
            best = rank
    if best is None:
        return None, False
    return best[2], not best[0]


#: How much of a short candidate copy is compared with the original, from its start.
PREFIX_COMPARE_BYTES = 1 << 20


def _prefix_of(checkpoint: Checkpoint, pread: Pread, size: int) -> bool:
    """Whether the known file, still at its path, holds this file's bytes so far.

    A file holding no more than the first line is not judged a copy: a banner
    line alone says nothing.
    """
    if size <= checkpoint.fingerprint.head_len:
        return False
    return still_a_copy(checkpoint, pread, size) is True


def still_a_copy(checkpoint: Checkpoint, pread: Pread, size: int) -> bool | None:
    """Whether the first ``size`` bytes of the known file at its path are ``pread``'s.

    None when that cannot be told: no file at that path, another file there, a
    shorter one, or one that starts otherwise now (truncated since, as
    copytruncate does right after its copy, and written again).
    """
    original = checkpoint.fingerprint
    try:
        # Through a symlink if need be: only the known file's own inode is read.
        fd = open_log_file(checkpoint.path, roots=("/",))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (original.dev, original.ino) or st.st_size < size:
            return None
        if not original.matches_head(os.pread(fd, original.head_len, 0)):
            return None
        return _same_start(functools.partial(os.pread, fd), pread, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _same_start(longer: Pread, shorter: Pread, size: int) -> bool:
    """Whether the first ``size`` bytes look the same in both files.

    The first :data:`PREFIX_COMPARE_BYTES` and the last :data:`MARKER_BYTES` before
    ``size`` are compared: enough to tell a copy from a file that only starts alike.
    """
    tail = max(0, size - MARKER_BYTES)
    ranges = [(0, min(size, PREFIX_COMPARE_BYTES)), (tail, size)]
    return all(longer(end - start, start) == shorter(end - start, start) for start, end in ranges)


def copies_found_together(new: Sequence[Identified]) -> list[tuple[Identified, Identified]]:
    """``(copy, original)`` pairs among never-seen files found at the same time.

    copytruncate copies a file, then empties it. A daemon that starts (or first
    looks) between the two finds the file and its copy together, neither known
    yet, and would read both from their start: every line of the copy twice.
    Files that start alike, where one holds the other's bytes so far, are one
    file: the original is the longest (it is the one still written to), and at
    equal sizes the one changed first (the copy is written after the original's
    last write). Raises OSError when a file cannot be read.
    """
    groups: dict[tuple[str, int], list[tuple[int, Identified]]] = defaultdict(list)
    for found in new:
        if found.known is not None or found.copy_of is not None or found.rewritten:
            continue
        fp = found.fingerprint
        changed_ns = os.fstat(found.fd).st_ctime_ns
        groups[(fp.head_sha256, fp.head_len)].append((changed_ns, found))
    pairs: list[tuple[Identified, Identified]] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: (-item[1].size, item[0]))
        original = group[0][1]
        read_original = functools.partial(os.pread, original.fd)
        for _, other in group[1:]:
            # The first line alone says nothing (see _prefix_of).
            if other.size > original.fingerprint.head_len and _same_start(
                read_original, functools.partial(os.pread, other.fd), other.size
            ):
                pairs.append((other, original))
    return pairs


def find_copies(
    directories: Iterable[Path], originals: Sequence[Checkpoint], skip: set[tuple[int, int]]
) -> list[tuple[str, Identified]]:
    """Copies of ``originals`` among the plain files in ``directories`` (not below them).

    Files whose (device, inode) is in ``skip`` are not looked at. Each original is
    matched at most once; the matched files are returned open, as copies.
    """
    by_head: dict[str, list[Checkpoint]] = defaultdict(list)
    for checkpoint in originals:
        by_head[checkpoint.fingerprint.head_sha256].append(checkpoint)
    head_lengths = sorted({c.fingerprint.head_len for c in originals})
    left = {c.fingerprint.id for c in originals}
    found: list[tuple[str, Identified]] = []
    for path, st in regular_files(directories):
        if not left:
            break
        if is_compressed(path) or (st.st_dev, st.st_ino) in skip:
            continue
        try:
            fd = open_log_file(path)
        except OSError:
            continue
        copy = _copy_among(fd, head_lengths, by_head, left)
        if copy is None:
            os.close(fd)
            continue
        assert copy.copy_of is not None
        left.discard(copy.copy_of.fingerprint.id)
        found.append((path, copy))
    return found


def _copy_among(
    fd: int, head_lengths: Sequence[int], by_head: ByHead, left: set[str]
) -> Identified | None:
    for length in head_lengths:
        try:
            found = identify_open(fd, fingerprint_bytes=length, candidates={}, by_head=by_head)
        except OSError:
            return None
        if (
            found is not None
            and found.copy_of
            and not found.copy_in_progress
            and found.copy_of.fingerprint.id in left
        ):
            return found
    return None


def end_of_last_line(fd: int, size: int, block: int = 65536) -> int:
    """The offset just past the last newline before ``size`` (0 if there is none).

    ``read_from = "end"`` starts there, so a line being written is read whole.
    """
    pos = size
    while pos > 0:
        start = max(0, pos - block)
        data = os.pread(fd, pos - start, start)
        newline = data.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0
