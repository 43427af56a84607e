"""The C allocator's per-thread arenas, limited for a daemon that runs for months.

glibc gives threads that allocate at the same moment arenas of their own, up to
eight per core, and memory freed in one is reused only by allocations there. The
daemon's threads (reads, seals, uploads, state saves) each take turns building
and dropping large buffers, so with many files known the process grew by
arenas' worth of free memory. ``bench/many_files.py`` with 100,000 files: two
arenas, 244.6 MiB at the peak and 227.1 MiB after; without the limit, 252.3 and
245.3 MiB, and the first pass no faster (35.1 s and 36.1 s). The interpreter lock
serialises most allocation anyway.
"""

from __future__ import annotations

__all__ = ["limit_malloc_arenas"]

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` in glibc's ``<malloc.h>``.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Ask glibc for at most ``arenas`` arenas; True if it agreed.

    Only before threads start allocating (arenas made stay), and not when the
    operator chose with ``MALLOC_ARENA_MAX``. Elsewhere (musl, macOS) nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    agreed = bool(mallopt(_M_ARENA_MAX, arenas))
    log.debug("malloc arenas limited", extra={"arenas": arenas, "agreed": agreed})
    return agreed
