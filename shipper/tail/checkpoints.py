"""Checkpoints: where each known file resumes, with what proves it is the same file.

They are kept in the state database (``shipper.state.statedb``), a row per file.
``CheckpointStore`` reads the first format's ``checkpoints.json`` (and its
backup generation ``.1``), once, when a state directory is converted.
"""

from __future__ import annotations

__all__ = ["CHECKPOINT_FORMAT_VERSION", "Checkpoint", "CheckpointStore"]

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1


#: Fields about saving a checkpoint, not of it: setting them marks nothing unsaved.
_BOOKKEEPING = frozenset({"unsaved", "saved_as"})


@dataclass(slots=True)
class Checkpoint:
    fingerprint: Fingerprint
    source: str
    path: str
    #: Every byte before this offset is sealed in the spool or delivered.
    offset: int
    #: Wall-clock time the file was last found or read; old ones are forgotten.
    seen_at: float = field(default_factory=time.time)
    #: Checksums of the bytes before the last few sealed ends (see ``markers``).
    markers: tuple[Marker, ...] = ()
    #: Read to its end after it was rotated away or truncated: nothing more will come.
    finished: bool = False
    #: The file this one is a copy of (copytruncate), continued where that one stopped.
    copy_of: str | None = None
    #: The path it was first found at. When that path names another file (or
    #: none), this one was renamed by a rotation (``app.log`` → ``app.log.1``),
    #: even where the globs still match its new name.
    origin: str = ""
    #: Set since the state database last took it: any field set marks it, so a save
    #: looks only at these rather than at every known file.
    unsaved: bool = field(default=True, init=False, compare=False, repr=False)
    #: What the state database holds of it, as a hash of the row (the saver's to
    #: compare; None: no row yet). Here rather than in a table of the saver's own:
    #: with 100,000 files known, that table alone took 9 MiB.
    saved_as: int | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.origin:
            self.origin = self.path

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name not in _BOOKKEEPING:
            object.__setattr__(self, "unsaved", True)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "fingerprint": self.fingerprint.to_json(),
            "source": self.source,
            "path": self.path,
            "offset": self.offset,
            "seen_at": self.seen_at,
            "markers": [m.to_json() for m in self.markers],
        }
        if self.finished:
            doc["finished"] = True
        if self.copy_of is not None:
            doc["copy_of"] = self.copy_of
        if self.origin != self.path:
            doc["origin"] = self.origin
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            source=str(data["source"]),
            path=str(data["path"]),
            offset=int(data["offset"]),
            seen_at=float(data.get("seen_at", time.time())),
            markers=tuple(Marker.from_json(m) for m in data.get("markers", ())),
            finished=bool(data.get("finished", False)),
            copy_of=None if data.get("copy_of") is None else str(data["copy_of"]),
            origin=str(data.get("origin") or ""),
        )


class CheckpointStore:
    """Reads the first format's ``checkpoints.json`` and its backup generation ``.1``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".1")

    def load(self) -> dict[str, Checkpoint]:
        """Checkpoints by fingerprint id; falls back to the backup generation, loudly."""
        problems: list[str] = []
        for candidate in (self.path, self.backup):
            if not candidate.exists():
                continue
            try:
                loaded = _decode(candidate.read_bytes())
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                problems.append(f"{candidate}: {exc}")
                log.error(
                    "checkpoint file unreadable", extra={"path": str(candidate), "reason": str(exc)}
                )
                continue
            if candidate is self.backup:
                log.error("using the backup checkpoint generation", extra={"path": str(candidate)})
            return loaded
        if problems:
            # Both generations damaged. The spool and the ledger still hold the end of
            # every sealed range, so resuming from them loses and repeats nothing; set the
            # damaged files aside for inspection rather than refusing to start.
            for candidate in (self.path, self.backup):
                if candidate.exists():
                    candidate.replace(candidate.with_name(candidate.name + ".corrupt"))
            log.error(
                "no readable checkpoint generation; resuming from the spool and the ledger",
                extra={"problems": problems},
            )
        return {}


def _decode(data: bytes) -> dict[str, Checkpoint]:
    doc = orjson.loads(data)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("version") != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format version {doc.get('version')!r}")
    result: dict[str, Checkpoint] = {}
    for item in doc["checkpoints"]:
        checkpoint = Checkpoint.from_json(item)
        result[checkpoint.fingerprint.id] = checkpoint
    return result
