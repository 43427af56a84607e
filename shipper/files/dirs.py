"""Directories the daemon creates: the permissions it means, whatever the umask, and
names that survive a power cut.

``os.mkdir(path, mode)`` gives ``mode`` minus the umask: never more, but possibly
less (a umask of 0277 would leave the owner unable to write). So each new
directory is made with its mode and then set to exactly that mode; there is no
moment at which it is wider. Each new name is then fsynced into its parent,
as a file's would be.
"""

from __future__ import annotations

__all__ = ["PRIVATE_DIR_MODE", "make_dirs", "narrow_mode"]

import os
import stat
from pathlib import Path

from shipper.files.durable import fsync_dir

#: The daemon's own state (the spool and what it sets aside): nobody else's business.
PRIVATE_DIR_MODE = 0o700


def make_dirs(path: Path, mode: int) -> list[Path]:
    """Create ``path`` and any missing parents with exactly ``mode``; return those created.

    Directories that exist are left as they are. One that another thread creates
    at the same moment counts as existing, and its parent is fsynced here too, so
    that whatever this caller writes into it is not durable before its name is.
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir() and current != current.parent:
        missing.append(current)
        current = current.parent
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
        else:
            os.chmod(directory, mode)
            created.append(directory)
        fsync_dir(directory.parent)
    return created


def narrow_mode(path: Path, mode: int) -> bool:
    """Take from an existing directory every permission bit outside ``mode``
    (one an older version made under a wider umask); True when it changed.

    Bits are only taken away, never added: a directory an operator made narrower
    stays so.
    """
    current = stat.S_IMODE(os.stat(path).st_mode)
    if not current & ~mode:
        return False
    os.chmod(path, current & mode)
    return True
