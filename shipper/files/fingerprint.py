"""File identity by content: device/inode plus a checksum of the file's first bytes.

The path is only data. A file is known by where it lives on the device and by
what it starts with, so a rename keeps its identity and a reused inode (with
other content) does not inherit a stranger's checkpoint.
"""

from __future__ import annotations

__all__ = ["Fingerprint", "head_of"]

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Fingerprint:
    dev: int
    ino: int
    #: How many leading bytes the checksum covers: up to and including the first
    #: newline, or ``fingerprint_bytes`` when the first line is longer. Stored so
    #: a later change of ``fingerprint_bytes`` still recognises known files.
    head_len: int
    head_sha256: str
    #: Counts rewrites in place that kept the same first line (truncate, then the
    #: same banner again): each is a new file whose byte ranges must get new keys.
    generation: int = 0
    #: A short stable name, used in checkpoints, spool headers and object keys.
    #: Computed once: scans and saves ask for it for every file they look at.
    id: str = field(init=False, repr=False, compare=False)
    #: ``(dev, ino)``, made once: the key the file tables and indexes share (a tuple
    #: of its own in each cost about 120 bytes per known file).
    inode: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inode", (self.dev, self.ino))
        material = f"{self.dev}:{self.ino}:{self.head_len}:{self.head_sha256}"
        if self.generation:
            material += f":{self.generation}"
        object.__setattr__(
            self, "id", hashlib.blake2b(material.encode(), digest_size=8).hexdigest()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dev": self.dev,
            "ino": self.ino,
            "head_len": self.head_len,
            "head_sha256": self.head_sha256,
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(
            dev=int(data["dev"]),
            ino=int(data["ino"]),
            head_len=int(data["head_len"]),
            head_sha256=str(data["head_sha256"]),
            generation=int(data.get("generation", 0)),
        )

    def matches_head(self, head: bytes) -> bool:
        """Whether ``head`` (at least ``head_len`` bytes of a file) starts like this file."""
        if len(head) < self.head_len:
            return False
        return hashlib.sha256(head[: self.head_len]).hexdigest() == self.head_sha256


def head_of(data: bytes, fingerprint_bytes: int) -> bytes | None:
    """The part of a file's first bytes that identifies it, or None while it is too short.

    A file whose first line is not complete yet (and shorter than
    ``fingerprint_bytes``) cannot be identified: its head would still change.
    """
    newline = data.find(b"\n", 0, fingerprint_bytes)
    if newline >= 0:
        return data[: newline + 1]
    if len(data) >= fingerprint_bytes:
        return data[:fingerprint_bytes]
    return None
