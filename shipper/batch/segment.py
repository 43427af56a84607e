"""One file's byte range inside a batch: what a spool entry and an object account for."""

from __future__ import annotations

__all__ = ["Segment"]

from dataclasses import dataclass
from typing import Any

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker


@dataclass(frozen=True, slots=True)
class Segment:
    """One file's byte range inside a batch."""

    fingerprint: Fingerprint
    path: str
    start: int
    end: int
    lines: int
    #: The checksum of the file's bytes just before ``end``. Kept per segment in an
    #: entry of several files; a one-file entry has it as the entry's ``end_marker``.
    end_marker: Marker | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "fingerprint": self.fingerprint.to_json(),
            "path": self.path,
            "start": self.start,
            "end": self.end,
            "lines": self.lines,
        }
        if self.end_marker is not None:
            data["end_marker"] = self.end_marker.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            path=str(data["path"]),
            start=int(data["start"]),
            end=int(data["end"]),
            lines=int(data["lines"]),
            end_marker=None
            if data.get("end_marker") is None
            else Marker.from_json(data["end_marker"]),
        )


def _end_marker(data: dict[str, Any]) -> Marker | None:
    raw = data.get("end_marker")
    return None if raw is None else Marker.from_json(raw)
