"""Process exit codes. They are part of the CLI's contract and documented in the README."""

from __future__ import annotations

__all__ = ["ExitCode"]

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: The daemon stopped on an error it could not recover from (state directory unusable, ...).
    RUNTIME_ERROR = 1
    #: The command line or the config file is invalid; nothing was started.
    CONFIG_INVALID = 2
    #: ``shipper backfill`` was stopped before everything was read and delivered;
    #: running it again goes on from where it stopped.
    INCOMPLETE = 3
    #: A second SIGINT/SIGTERM forced the exit before the drain finished; the spool keeps the rest.
    FORCED = 130
