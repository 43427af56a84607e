"""Opening, judging and deleting files of an untrusted logs directory.

Anything that can write to a logs directory may put a symlink, a FIFO, a socket
or a device there under a log file's name. So every log file is opened by
:func:`open_log_file`: its path is resolved, judged, and then opened by walking
down the resolved path one component at a time without following any symlink,
so what is opened is what was judged even if a name is swapped in between. A
FIFO or a device is never opened (its type is checked first, and the open is
non-blocking besides), so none can stall the daemon. Retention deletes through
:func:`unlink_beneath` alone, which cannot be led out of a base directory.
"""

from __future__ import annotations

__all__ = [
    "file_kind",
    "open_beneath",
    "open_log_file",
    "root_of",
    "split_beneath",
    "stat_beneath",
    "unlink_beneath",
]

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator, Sequence

from shipper.errors import RefusalReason, RefusedFileError
from shipper.files.durable import InodeKey

#: Directories on the way to a file are opened only to be walked through: O_PATH
#: (Linux) needs no read permission on them, as a path lookup does not.
_WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
#: A log file: never through a symlink, never blocking (a FIFO swapped in after the
#: type check opens at once, and is then refused), never as a controlling terminal.
_LOG_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_NOT_NAMES = ("", ".", "..")


def file_kind(mode: int) -> RefusalReason | None:
    """None for a regular file; otherwise what it is, as a refusal reason."""
    if stat.S_ISREG(mode):
        return None
    kinds: tuple[tuple[bool, RefusalReason], ...] = (
        (stat.S_ISLNK(mode), "symlink"),
        (stat.S_ISFIFO(mode), "fifo"),
        (stat.S_ISSOCK(mode), "socket"),
        (stat.S_ISCHR(mode), "char_device"),
        (stat.S_ISBLK(mode), "block_device"),
        (stat.S_ISDIR(mode), "directory"),
    )
    return next((kind for matches, kind in kinds if matches), "other")


def root_of(real_path: str, roots: Iterable[str]) -> str | None:
    """The deepest of ``roots`` (resolved absolute paths) that holds ``real_path``."""
    holding = [r for r in roots if real_path == r or real_path.startswith(r.rstrip("/") + "/")]
    return max(holding, key=len, default=None)


def split_beneath(path: str, bases: Iterable[str]) -> tuple[str, list[str]] | None:
    """``(base, names)`` for a ``path`` spelled as one of ``bases`` and then plain names.

    The deepest base wins. None when no base starts the path, or a name on the
    way is empty, ``.`` or ``..``: such a path is not known to lie beneath a base.
    """
    for base in sorted(bases, key=len, reverse=True):
        prefix = base.rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        names = path[len(prefix) :].split("/")
        if any(name in _NOT_NAMES for name in names):
            return None
        return base, names
    return None


@contextlib.contextmanager
def _parent_beneath(base: str, names: Sequence[str]) -> Iterator[int]:
    """A descriptor of the directory holding ``names[-1]``, reached from ``base``.

    ``base`` is trusted (it comes from the config) and may be reached through
    symlinks; below it none is followed: a directory swapped for one is ENOTDIR.
    """
    if not names or any(name in _NOT_NAMES or "/" in name for name in names):
        raise ValueError(f"not plain names below {base}: {list(names)!r}")
    fd = os.open(base, _WALK_FLAGS)
    try:
        for name in names[:-1]:
            below = os.open(name, _WALK_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        yield fd
    finally:
        os.close(fd)


def stat_beneath(base: str, names: Sequence[str]) -> os.stat_result:
    """The stat of ``base/names...`` itself (a symlink is not followed), reached with
    no symlink followed below ``base``."""
    with _parent_beneath(base, names) as parent:
        return os.stat(names[-1], dir_fd=parent, follow_symlinks=False)


def open_beneath(base: str, names: Sequence[str], *, shown: str | None = None) -> int:
    """Open the regular file ``base/names...`` for reading, following no symlink below ``base``.

    Raises :class:`RefusedFileError` for anything but a regular file (``shown``
    names it in the error), OSError when it cannot be opened (gone, or a directory
    on the way swapped for a symlink: ENOTDIR).
    """
    shown = shown if shown is not None else os.path.join(base, *names)
    with _parent_beneath(base, names) as parent:
        kind = file_kind(os.stat(names[-1], dir_fd=parent, follow_symlinks=False).st_mode)
        if kind is not None:
            raise RefusedFileError(shown, kind)
        fd = os.open(names[-1], _LOG_FILE_FLAGS, dir_fd=parent)
    try:
        # Swapped between the check and the open: the open did not block, this says so.
        kind = file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise RefusedFileError(shown, kind)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_log_file(
    path: str, *, roots: Sequence[str] | None = None, resolved: dict[str, str] | None = None
) -> int:
    """Open a file of a logs directory for reading, never blocking, never escaping.

    With ``roots`` (resolved directories: a source's base directories and its
    ``symlink_targets``) ``path`` may be a symlink, or lie in a linked directory:
    the whole chain is resolved, and the real path must lie in one of the roots,
    else :class:`RefusedFileError` (``symlink_outside``). Without, the file itself
    must not be a symlink (a name listed from a directory); its directory is
    resolved. Either way the resolved path is then walked down from its root with
    no symlink followed, and only a regular file is opened (else
    :class:`RefusedFileError`). Other failures raise OSError as ``os.open`` does.

    ``resolved`` caches directories' real paths for one scan of many files: a
    directory swapped for a symlink meanwhile still cannot lead out, since the
    walk down from the root follows none.
    """
    root: str | None
    directory, name = os.path.split(path)
    cache = {} if resolved is None else resolved
    real_dir = cache.get(directory)
    if real_dir is None:
        real_dir = cache[directory] = os.path.realpath(directory or ".")
    if roots is None:
        real = os.path.join(real_dir, name)
        root = "/"
    else:
        # A link is resolved whole; anything else is its directory's real path and
        # its name (a link swapped in after this look is refused by the walk).
        link = stat.S_ISLNK(os.lstat(path).st_mode)
        real = os.path.realpath(path) if link else os.path.join(real_dir, name)
        root = root_of(real, roots)
        if root is None:
            raise RefusedFileError(path, "symlink_outside", target=real)
    names = [n for n in real[len(root) :].split("/") if n]
    if not names or names[-1] in _NOT_NAMES:
        raise RefusedFileError(path, "directory")
    return open_beneath(root, names, shown=path)


def unlink_beneath(base: str, names: Sequence[str], inode: InodeKey) -> bool:
    """Delete ``base/names...`` if it is still the regular file ``inode``.

    Its directory is reached from ``base`` with no symlink followed, and the name
    is checked and unlinked through that directory's descriptor, so a directory on
    the way swapped for a symlink, at any moment, cannot lead the deletion out of
    ``base``. False when the name is gone or names something else; OSError
    (ENOTDIR) when a symlink stands on the way.
    """
    with _parent_beneath(base, names) as parent:
        try:
            st = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != inode:
            return False
        try:
            os.unlink(names[-1], dir_fd=parent)
        except FileNotFoundError:
            return False
    return True
