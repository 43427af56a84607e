"""Gap records: the object that says exactly which lines were deleted before shipping.

Written only by the disk guard's ``delete_unshipped`` policy. A gap record is a
one-line NDJSON object stored beside the batches, under the key the batch of the
same range would have, marked ``.gap`` (see :func:`shipper.batch.objectkey.gap_key`). It is
spooled and uploaded like a batch, and never enters the delivered ranges, so it
never counts as a delivery of the lines it names.
"""

from __future__ import annotations

__all__ = ["encode_gap"]

import hashlib
from datetime import datetime, timezone

import orjson

from shipper.batch.objectkey import KeyTemplate, gap_key
from shipper.batch.pack import PackedBatch, compress
from shipper.batch.segment import Segment
from shipper.files.durable import printable_path
from shipper.files.fingerprint import Fingerprint
from shipper.housekeeping.loss import Loss
from shipper.housekeeping.retention import RotatedFile


def encode_gap(
    file: RotatedFile,
    loss: Loss,
    reason: str,
    *,
    host: str,
    keys: KeyTemplate,
    codec: str,
    level: int,
    now: float,
) -> PackedBatch:
    # A file never identified (a compressed file matching no known one) is named
    # by where it was: its device and inode, with no first line.
    fingerprint = loss.fingerprint or Fingerprint(file.dev, file.ino, 0, "")
    path = printable_path(file.path)
    record = {
        "shipper_gap": True,
        "reason": f"deleted unshipped: {reason}",
        "host": host,
        "source": file.source,
        "path": path,
        "fingerprint": fingerprint.id,
        "start": loss.start,
        "end": loss.end,
        "lines": loss.lines,
        "compressed": file.compressed,
        "deleted_at": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
    }
    body = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    batch_key = keys.render(
        source=file.source,
        fingerprint_id=fingerprint.id,
        start=loss.start,
        end=loss.end,
        first_time=now,
    )
    return PackedBatch(
        key=gap_key(batch_key, codec),
        source=file.source,
        segments=(Segment(fingerprint, path, loss.start, loss.end, loss.lines),),
        records=0,
        body=compress(body, codec, level),
        body_sha256=hashlib.sha256(body).hexdigest(),
        uncompressed_bytes=len(body),
        codec=codec,
        first_time=now,
        kind="gap",
    )
