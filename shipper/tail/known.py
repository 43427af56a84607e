"""The known files: checkpoints by fingerprint id, with the indexes a scan looks them up by.

A scan asks "which known files were on this (device, inode)?" and "which start with
these bytes?" for every file it looks at. With 100,000 files known, building those
indexes per scan cost more than the scan itself; they are kept up to date as
checkpoints come and go instead.
"""

from __future__ import annotations

__all__ = ["CheckpointsBy", "KnownFiles", "MarkedByHead", "WaitingFiles"]

import itertools
from collections import Counter
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from types import MappingProxyType
from typing import TypeVar

from shipper.files.durable import InodeKey
from shipper.files.one_or_more import OneOrMore, add, drop, members
from shipper.tail.checkpoints import Checkpoint

K = TypeVar("K")


class CheckpointsBy(Mapping[K, Sequence[Checkpoint]]):
    """An index read as checkpoints by key, however its entries are stored."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[K, OneOrMore[Checkpoint]]) -> None:
        self._entries = entries

    def __getitem__(self, key: K) -> tuple[Checkpoint, ...]:
        return members(self._entries[key])

    def get(self, key: K, default: Sequence[Checkpoint] = ()) -> Sequence[Checkpoint]:  # type: ignore[override]
        entry = self._entries.get(key)
        return default if entry is None else members(entry)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class MarkedByHead(Mapping[str, Sequence[Checkpoint]]):
    """Known files by first-bytes checksum, only those with markers.

    Markers are added as a file is read, so they are filtered at lookup time.
    """

    def __init__(self, by_head: Mapping[str, Sequence[Checkpoint]]) -> None:
        self._by_head = by_head

    def __getitem__(self, head: str) -> Sequence[Checkpoint]:
        marked = [c for c in self._by_head[head] if c.markers]
        if not marked:
            raise KeyError(head)
        return marked

    def __iter__(self) -> Iterator[str]:
        return (head for head in self._by_head if head in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class KnownFiles(MutableMapping[str, Checkpoint]):
    """Checkpoints by fingerprint id, indexed by inode and by first-bytes checksum.

    A checkpoint's fingerprint never changes (a new generation is a new checkpoint),
    so the indexes follow from adding and removing entries.
    """

    def __init__(self, checkpoints: Mapping[str, Checkpoint] | None = None) -> None:
        self._by_id: dict[str, Checkpoint] = {}
        self._by_inode: dict[InodeKey, OneOrMore[Checkpoint]] = {}
        self._by_head: dict[str, OneOrMore[Checkpoint]] = {}
        for fid, checkpoint in (checkpoints or {}).items():
            self[fid] = checkpoint

    def __getitem__(self, fid: str) -> Checkpoint:
        return self._by_id[fid]

    def __setitem__(self, fid: str, checkpoint: Checkpoint) -> None:
        if fid in self._by_id:
            del self[fid]
        self._by_id[fid] = checkpoint
        fp = checkpoint.fingerprint
        add(self._by_inode, fp.inode, checkpoint)
        add(self._by_head, fp.head_sha256, checkpoint)

    def __delitem__(self, fid: str) -> None:
        checkpoint = self._by_id.pop(fid)
        fp = checkpoint.fingerprint
        drop(self._by_inode, fp.inode, checkpoint)
        drop(self._by_head, fp.head_sha256, checkpoint)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, fid: object) -> bool:
        return fid in self._by_id

    # The mixins' versions go through ``__getitem__`` per entry: these are looped over
    # all known files every second.
    def items(self) -> ItemsView[str, Checkpoint]:
        return self._by_id.items()

    def values(self) -> ValuesView[Checkpoint]:
        return self._by_id.values()

    def get(self, fid: str, default: Checkpoint | None = None) -> Checkpoint | None:  # type: ignore[override]
        return self._by_id.get(fid, default)

    def on_inode(self, inode: InodeKey) -> tuple[Checkpoint, ...]:
        entry = self._by_inode.get(inode)
        return () if entry is None else members(entry)

    def index(self) -> tuple[Mapping[InodeKey, Sequence[Checkpoint]], MarkedByHead]:
        """Both indexes, for one scan: read-only views.

        A scan in a thread only looks keys up, each an atomic read of an entry, while
        the reader adds checkpoints: it may see a file the reader has just added,
        which is then known, as it is. Copies per scan of everything cost 10 MiB
        at a time with 100,000 files known.
        """
        return CheckpointsBy(MappingProxyType(self._by_inode)), MarkedByHead(
            CheckpointsBy(MappingProxyType(self._by_head))
        )


class WaitingFiles:
    """Files found but not opened for want of a slot, in the order they were found.

    Kept by path (what a scan finds) and counted by inode (what lookups ask about).
    """

    __slots__ = ("_by_path", "_inodes", "_peak")

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[str, InodeKey]] = {}
        self._inodes: Counter[InodeKey] = Counter()
        #: The most entries since the tables were last built: a dict never shrinks, and
        #: the 100,000 files waiting at a first start would hold 9 MiB of empty slots.
        self._peak = 0

    def __len__(self) -> int:
        return len(self._by_path)

    def holds(self, inode: InodeKey) -> bool:
        return inode in self._inodes

    def inodes(self) -> set[InodeKey]:
        return set(self._inodes)

    def first(self, count: int) -> list[tuple[str, str]]:
        """``(source, path)`` of the first ``count`` in line."""
        chosen = itertools.islice(self._by_path.items(), max(0, count))
        return [(source, path) for path, (source, _) in chosen]

    def replace(self, waiting: Mapping[str, tuple[str, InodeKey]]) -> None:
        """After a scan of everything: exactly these wait."""
        self._by_path = dict(waiting)
        self._inodes = Counter(inode for _, inode in waiting.values())
        self._peak = len(self._by_path)

    def update(self, looked_at: Iterable[str], waiting: Mapping[str, tuple[str, InodeKey]]) -> None:
        """After a scan of a few paths: of those, these wait (the others do not)."""
        for path in looked_at:
            was = self._by_path.pop(path, None)
            if was is not None:
                self._inodes[was[1]] -= 1
                if not self._inodes[was[1]]:
                    del self._inodes[was[1]]
        self._by_path.update(waiting)
        self._inodes.update(inode for _, inode in waiting.values())
        self._peak = max(self._peak, len(self._by_path))
        if self._peak > 1024 and len(self._by_path) < self._peak // 4:
            self.replace(self._by_path)  # built anew at their size (amortised O(1))
