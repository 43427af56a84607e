"""Object keys: a pure function of the source, the file's fingerprint and the byte range.

Retrying or replaying a batch after a crash writes the same key, so the
store's ``If-None-Match: *`` turns a repeat into a no-op instead of a duplicate.
The Hive-style ``dt=``/``hour=`` prefix comes from the batch's first record time,
so DuckDB, Athena and Trino can prune partitions.
"""

from __future__ import annotations

__all__ = ["OBJECT_SUFFIX", "object_key"]

from datetime import datetime, timezone

OBJECT_SUFFIX = ".ndjson.zst"


def object_key(
    *,
    prefix: str,
    source: str,
    fingerprint_id: str,
    start: int,
    end: int,
    first_time: float,
) -> str:
    """``[prefix/]source=S/dt=YYYY-MM-DD/hour=HH/<fingerprint>-<start>-<end>.ndjson.zst``.

    Offsets are zero-padded to 20 digits so a listing sorts a file's objects by position.
    """
    if end <= start:
        raise ValueError(f"empty byte range [{start}, {end})")
    when = datetime.fromtimestamp(first_time, tz=timezone.utc)
    name = f"{fingerprint_id}-{start:020d}-{end:020d}{OBJECT_SUFFIX}"
    parts = [prefix] if prefix else []
    parts += [f"source={source}", f"dt={when:%Y-%m-%d}", f"hour={when:%H}", name]
    return "/".join(parts)
