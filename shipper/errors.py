"""Typed errors raised by the library. Only ``shipper.cli`` turns them into exit codes."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "FailureKind",
    "ShipperError",
    "SinkError",
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
    """The state directory (checkpoints, spool, ledger) cannot be used."""


class SpoolCorruptError(ShipperError):
    """A spool entry failed its checks; it is never uploaded.

    ``header`` is the entry's header when that part passed its own checksum.
    """

    def __init__(self, message: str, *, header: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.header = header


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
