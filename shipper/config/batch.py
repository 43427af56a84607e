"""``[batch]`` and ``[spool]``: when a batch is cut, and how much may wait to be sent."""

from __future__ import annotations

from shipper.config.model import BatchSettings, SpoolSettings, allowed_keys
from shipper.config.reader import Declared, Table, show_size

_BATCH_KEYS = allowed_keys(BatchSettings)
_SPOOL_KEYS = allowed_keys(SpoolSettings)


def parse_batch(table: Table | None) -> BatchSettings:
    if table is None:
        return BatchSettings()
    table.check_keys(_BATCH_KEYS)
    declared = Declared(table, BatchSettings)
    return BatchSettings(
        max_bytes=declared.size("max_bytes"),
        max_records=declared.integer("max_records"),
        max_age_secs=declared.seconds("max_age_secs"),
    )


def parse_spool(table: Table | None, batch: BatchSettings) -> SpoolSettings:
    """The spool must hold at least one full batch, or a batch could never be spooled."""
    if table is None:
        return SpoolSettings()
    table.check_keys(_SPOOL_KEYS)
    reported = len(table.problems)
    declared = Declared(table, SpoolSettings)
    max_bytes = declared.size("max_bytes")
    if len(table.problems) == reported and max_bytes < batch.max_bytes:
        limit = show_size(batch.max_bytes)
        table.problem("max_bytes", f"must be at least batch.max_bytes ({limit})")
    max_entries = declared.integer("max_entries")
    return SpoolSettings(max_bytes=max_bytes, max_entries=max_entries)
