"""Typed errors raised by the library. Only ``shipper.cli`` turns them into exit codes."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "DecompressionRefusedError",
    "FailureKind",
    "RefusalReason",
    "RefusedFileError",
    "ShipperError",
    "SinkError",
    "SpansError",
    "SpoolCorruptError",
    "StateError",
]

from dataclasses import dataclass
from typing import Any, Literal


class ShipperError(Exception):
    """Base class of every error the library raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, located by its dotted key path."""

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


class ConfigError(ShipperError):
    """The config could not be read or is invalid; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StateError(ShipperError):
    """The state directory (lock, spool, state database) cannot be used."""


#: Why a path in the logs directory is never opened: a symlink leading outside the
#: directories a source may read (``symlink_outside``), a symlink where none may be
#: (``symlink``), or not a regular file at all.
RefusalReason = Literal[
    "symlink_outside",
    "symlink",
    "fifo",
    "socket",
    "char_device",
    "block_device",
    "directory",
    "other",
]


class RefusedFileError(ShipperError, OSError):
    """A path that is never opened as a log file (see :data:`RefusalReason`).

    An ``OSError`` too, so every place that already copes with a file it cannot
    open copes with this one.
    """

    def __init__(self, path: str, reason: RefusalReason, *, target: str | None = None) -> None:
        self.path = path
        self.reason: RefusalReason = reason
        #: Where a symlink really leads (its whole chain resolved).
        self.target = target
        leads = f" (leads to {target})" if target is not None else ""
        super().__init__(f"{path}: refused, {reason.replace('_', ' ')}{leads}")


class DecompressionRefusedError(ShipperError):
    """A compressed file expands too far to be a log: taken for a compression bomb.

    Carries how far it was read: ``compressed`` bytes of the file had yielded
    ``decompressed`` bytes when it was given up on.
    """

    def __init__(self, reason: str, *, compressed: int, decompressed: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.compressed = compressed
        self.decompressed = decompressed


class SpoolCorruptError(ShipperError):
    """A spool entry failed its checks; it is never uploaded.

    ``header`` is the entry's header when that part passed its own checksum.
    """

    def __init__(self, message: str, *, header: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.header = header


class SpansError(ShipperError):
    """An object's span list (the frame it ends with) is missing, damaged or not ours."""


#: How a failed write is handled: ``retriable`` (the store or the network will
#: recover: retry with backoff), ``access`` (credentials, permissions, a missing
#: bucket: retry slowly and report the daemon not ready until it clears) or
#: ``permanent`` (this request can never succeed: set the entry aside).
FailureKind = Literal["retriable", "access", "permanent"]


class SinkError(ShipperError):
    """A store rejected or failed a write; ``kind`` says what trying again can do."""

    def __init__(self, message: str, *, kind: FailureKind = "retriable") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind

    @property
    def retriable(self) -> bool:
        return self.kind != "permanent"
