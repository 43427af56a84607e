"""The C allocator's per-thread arenas, limited for a daemon that runs for months.

glibc gives threads that allocate at the same moment arenas of their own, up to
eight per core, and memory freed in one is reused only by allocations there. The
daemon's threads (reads, seals, uploads, state saves) each take turns building
and dropping large buffers, so with many files known the process grew by
arenas' worth of free memory: 100,000 known files, 253 MiB peak with two arenas,
and 260-270 MiB without the limit (``bench/many_files.py``). The interpreter lock
serialises most allocation anyway, so two arenas cost no measurable speed.
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
