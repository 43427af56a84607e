"""A long delivery history, made with the daemon's own state code (no daemon needed).

``add_history`` records ``objects`` delivered objects spread over ``files`` files
that are gone now: each object goes through the same merge a delivery does
(``ShippedIndex.add_entry``), and each file gets the checkpoint a finished,
rotated-away file has. Half the files were last seen within the grace period,
half long before it (forgotten at the daemon's first pass).
"""

from __future__ import annotations

__all__ = ["add_history", "dir_size"]

import os
import time
from pathlib import Path

from shipper.batch.segment import Segment
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker
from shipper.spool.entry import SpoolEntry
from shipper.state.delivered import ShippedIndex
from shipper.state.statedb import STATE_DB_NAME, StateDB
from shipper.tail.checkpoints import Checkpoint

#: Far above any inode of the test's own files, on a device no file is on.
_FIRST_INODE = 1 << 40
_OBJECT_BYTES = 600


def add_history(
    state_dir: Path,
    *,
    objects: int,
    files: int,
    grace_secs: float,
    source: str = "app",
    directory: str = "/var/log/gone",
) -> None:
    db = StateDB(state_dir / STATE_DB_NAME)
    db.open()
    try:
        index = ShippedIndex()
        checkpoints: list[Checkpoint] = []
        now = time.time()
        per_file = max(1, objects // files)
        for n in range(files):
            fingerprint = Fingerprint(0, _FIRST_INODE + n, 60, f"{n:064x}")
            path = f"{directory}/app-{n}.log.1"
            for i in range(per_file):
                start, end = i * _OBJECT_BYTES, (i + 1) * _OBJECT_BYTES
                segment = Segment(fingerprint, path, start, end, 1)
                index.add_entry(
                    SpoolEntry(
                        path=Path(),
                        seq=0,
                        key=f"k-{n}-{start}",
                        source=source,
                        segments=(segment,),
                        records=1,
                        body_sha256="",
                        uncompressed_bytes=0,
                        codec="zstd",
                        size=0,
                        end_marker=Marker(end, f"{end:016x}"),
                    )
                )
            seen_at = now - (grace_secs * 4 if n % 2 else grace_secs / 4)
            end = per_file * _OBJECT_BYTES
            checkpoints.append(
                Checkpoint(
                    fingerprint,
                    source,
                    path,
                    end,
                    seen_at=seen_at,
                    markers=(Marker(end, f"{end:016x}"),),
                    finished=True,
                )
            )
        stored = db.load()
        db.replace_all(
            [*stored.checkpoints.values(), *checkpoints],
            [*stored.shipped, *index],
            db.totals(),
        )
    finally:
        db.close()


def dir_size(directory: Path) -> int:
    """Bytes of every file below ``directory``."""
    return sum(
        (Path(top) / name).stat().st_size for top, _, names in os.walk(directory) for name in names
    )
