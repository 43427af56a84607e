"""What ``GET /status`` and ``shipper status`` show: per file, how far it is shipped."""

from __future__ import annotations

__all__ = ["FileStatus", "StatusUnavailableError", "fetch_status", "render_table", "status_url"]

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from shipper.errors import ShipperError
from shipper.redact_output import hide_url_secrets


class StatusUnavailableError(ShipperError):
    """No daemon answered at the status URL, or its answer was not status JSON."""


def status_url(host: str, port: int) -> str:
    """Where a daemon listening on ``host:port`` answers; a wildcard is asked on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch_status(url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    shown = hide_url_secrets(url)  # --url may carry a proxy's credentials
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            data = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StatusUnavailableError(
            f"no shipper status at {shown}: {hide_url_secrets(str(exc))}"
        ) from exc
    if not isinstance(data, dict) or "files" not in data:
        raise StatusUnavailableError(f"{shown} did not answer with shipper status")
    return data


@dataclass(frozen=True, slots=True)
class FileStatus:
    source: str
    path: str
    fingerprint: str
    #: Bytes in the file now.
    size: int
    #: Bytes sealed into the spool or delivered: where a restart resumes.
    checkpoint: int
    #: Wall-clock time the file last grew (its writer's last write).
    last_write: float | None
    #: Wall-clock time bytes were last read from it.
    last_read: float | None
    #: "open" (being tailed), "idle" (closed at its end, reopened when it grows).
    state: str
    #: A live file not written for the source's ``stale_after_secs``.
    stale: bool

    @property
    def lag_bytes(self) -> int:
        return max(0, self.size - self.checkpoint)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lag_bytes": self.lag_bytes}


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def render_table(status: dict[str, Any]) -> str:
    """``/status`` as text for a terminal: one row per file, then the totals."""
    rows = [("SOURCE", "PATH", "SIZE", "SHIPPED TO", "LAG", "LAST WRITE (UTC)", "STATE")]
    for f in status.get("files", []):
        state = f["state"] + (" STALE" if f.get("stale") else "")
        rows.append(
            (
                str(f["source"]),
                str(f["path"]),
                str(f["size"]),
                str(f["checkpoint"]),
                str(f["lag_bytes"]),
                _when(f.get("last_write")),
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    spool = status.get("spool", {})
    uploads = status.get("uploads", {})
    readiness = status.get("readiness", {})
    lines += [
        "",
        f"ready: {'yes' if readiness.get('ready') else 'no'}"
        + "".join(f"\n  - {r}" for r in readiness.get("reasons", [])),
        f"spool: {spool.get('bytes', 0)} bytes in {spool.get('entries', 0)} entries",
        f"last upload: {_when(uploads.get('last_success'))}",
    ]
    return "\n".join(line.rstrip() for line in lines)
