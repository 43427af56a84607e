"""The ledger: each delivery recorded, durably, as the file's merged delivered ranges.

A delivered object's byte ranges are merged into its files' rows of the state
database (``statedb``) and made durable before the spool entry is removed. It is
what retention proves a deletion by, and one of the three ends a file resumes
from after a crash. Per-object provenance is in each object's own metadata.
"""

from __future__ import annotations

__all__ = ["Ledger"]

import threading

from shipper.spool.entry import SpoolEntry
from shipper.state.delivered import ShippedIndex
from shipper.state.statedb import StateDB, Totals


class Ledger:
    """Records deliveries in ``db`` and, once durable, in ``index``. Blocks: call from a thread."""

    def __init__(self, db: StateDB, index: ShippedIndex) -> None:
        self.db = db
        self.index = index
        # Two deliveries of one file at once must not both merge into the same old ranges.
        self._lock = threading.Lock()

    def append(self, entry: SpoolEntry, *, outcome: str) -> None:
        """Record ``entry`` as delivered (``outcome``: stored, or already present)."""
        stored = outcome == "stored"
        delivered = Totals(
            stored=int(stored), already_present=int(not stored), records=entry.records
        )
        with self._lock:
            files = self.index.merged_with(entry)
            # An OSError (the disk under the state database) is retried by the uploader
            # like any local failure; the store's 412 makes the retried put a no-op.
            self.db.record_delivery(files, delivered)
            self.index.put(files)
