"""Where the reader hands its lines on: the stage after it, seen from the reader.

The reader cuts nothing and seals nothing itself. It reads chunks, hands them to a
``Consumer`` (chain -> batcher -> sealer), and learns what became durable only
through the outcomes it gives back to it. A file's sealed ranges stay a prefix of
it: the consumer seals a file's batches in order and stops at the first failure.
"""

from __future__ import annotations

__all__ = ["Consumer", "Sealed", "warn_failed"]

from collections.abc import Sequence
from typing import Protocol

from shipper.tail.context import TailContext
from shipper.tail.files import ActiveFile
from shipper.tail.tailer import LineChunk


class Sealed(Protocol):
    """What one seal step made durable; opaque to the reader but for its failure."""

    @property
    def error(self) -> OSError | None: ...


class Consumer(Protocol):
    """The stage after the reader. The synchronous calls run on the reading thread."""

    def process(self, active: ActiveFile, chunk: LineChunk, *, stream: str | None = None) -> None:
        """Run a chunk's lines through the chain into the file's batcher; batches it
        cuts wait in ``active.unsealed``."""
        ...

    def resume_key_block(self, active: ActiveFile) -> None:
        """Before a file read from past its start: enter a private key block if the
        bytes before open one."""
        ...

    def seal_owed(self, active: ActiveFile, *, beyond_limits: bool = False) -> Sealed:
        """Seal the file's cut batches in order, while the spool has room."""
        ...

    def settle(self, active: ActiveFile, sealed: Sequence[Sealed]) -> None:
        """On the event loop: move checkpoints for what was sealed, queue the uploads."""
        ...

    def spool_full(self) -> bool: ...

    async def wait_for_spool_space(self) -> bool:
        """Backpressure: while the spool is full, read nothing. False if a stop came first."""
        ...

    async def flush(self, active: ActiveFile, *, beyond_limits: bool = False) -> bool:
        """Cut and seal the open batch however small; True once nothing is left unsealed."""
        ...

    async def flush_together(
        self, actives: list[ActiveFile], *, beyond_limits: bool = False
    ) -> list[ActiveFile]:
        """Cut and seal every file's open batch; the files with nothing left unsealed."""
        ...


def warn_failed(ctx: TailContext, active: ActiveFile, error: OSError) -> None:
    """A file's read or its spool write failed: retried, at most one warning a while."""
    ctx.warnings.warn(
        "file read or spool write failed; will retry",
        path=active.tailer.path,
        error=str(error),
        unsealed_batches=len(active.unsealed),
    )
