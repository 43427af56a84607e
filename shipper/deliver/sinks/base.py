"""The one small interface every store implements."""

from __future__ import annotations

__all__ = ["ObjectToPut", "PutOutcome", "Sink"]

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class PutOutcome(Enum):
    STORED = "stored"
    #: The key already held this batch (a retry after a crash): counts as delivered.
    ALREADY_PRESENT = "already_present"


@dataclass(frozen=True, slots=True)
class ObjectToPut:
    key: str
    body: bytes
    #: Provenance (source, path, fingerprint, byte range, lines, SHA-256 of the body).
    metadata: Mapping[str, str]
    content_type: str = "application/x-ndjson"
    content_encoding: str = "zstd"


class Sink(Protocol):
    """Writes objects exactly once per key. Methods block: call them from a thread."""

    def put(self, obj: ObjectToPut) -> PutOutcome:
        """Store ``obj`` unless its key exists. Raises :class:`shipper.errors.SinkError`."""
        ...

    def close(self) -> None: ...
