"""The embedded default store: a local directory laid out like a bucket.

Each key becomes a path under the root. An object is written to a temp file,
fsynced, then hard-linked to its final name: ``link`` fails if the name
exists, which is this sink's ``If-None-Match: *``. Readers never see a partial
object, and a retried batch never overwrites or duplicates one. The object's
provenance metadata goes into ``user.shipper-*`` extended attributes where the
filesystem has them (``getfattr -d FILE`` shows them).

Directories it creates (``dt=``, ``hour=``, ...) are mode 0750 whatever the
umask, to match the objects' 0640: the owner writes, a group the operator
chooses may read, nobody else sees even the names. Each new one is fsynced
into its parent before an object is linked into it.
"""

from __future__ import annotations

__all__ = ["DirectorySink"]

import logging
import os
from pathlib import Path

from shipper.deliver.sinks.base import ObjectToPut, PutOutcome
from shipper.errors import SinkError
from shipper.files.dirs import make_dirs
from shipper.files.durable import fsync_dir, write_synced

log = logging.getLogger(__name__)

#: Directories the sink creates; see the module's docstring.
SINK_DIR_MODE = 0o750


class DirectorySink:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._warned_no_xattrs = False

    def put(self, obj: ObjectToPut) -> PutOutcome:
        final = self.root / obj.key
        if ".." in Path(obj.key).parts:
            raise SinkError(f"key {obj.key!r} escapes the sink root", kind="permanent")
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            make_dirs(final.parent, SINK_DIR_MODE)
            xattrs = {f"user.{k}": v.encode() for k, v in obj.metadata.items()}
            # Removes its partial file if it fails.
            if not write_synced(tmp, obj.body, xattrs=xattrs) and not self._warned_no_xattrs:
                self._warned_no_xattrs = True
                log.warning(
                    "the sink's filesystem has no extended attributes; objects are written"
                    " without their metadata (the ledger has it)",
                    extra={"root": str(self.root)},
                )
            try:
                os.link(tmp, final)
                outcome = PutOutcome.STORED
            except FileExistsError:
                outcome = PutOutcome.ALREADY_PRESENT
            finally:
                tmp.unlink(missing_ok=True)
            fsync_dir(final.parent)
        except OSError as exc:
            # A full or read-only disk may recover; the entry stays in the spool meanwhile.
            raise SinkError(f"writing {final}: {exc}") from exc
        return outcome

    def close(self) -> None:
        return None
