"""systemd's notify protocol: READY=1, STATUS=, STOPPING=1 and watchdog pings.

A datagram to the socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for
an abstract socket). Without that variable, as outside systemd, every call is a
no-op. The watchdog pings come from a task on the daemon's event loop, so a
loop that stops turning stops them, and systemd restarts the service.
"""

from __future__ import annotations

__all__ = ["Notifier"]

import contextlib
import logging
import os
import socket
from collections.abc import Mapping

from shipper.logs import ThrottledLog

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        # Pings come every few seconds: a gone socket is reported once a minute.
        self._failures = ThrottledLog(log, interval_secs=60.0)
        if address:
            # "@name" is an abstract socket: a NUL byte, then the name.
            self._target: str | bytes = (
                b"\0" + address[1:].encode() if address.startswith("@") else address
            )
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        #: How often systemd wants a ping (None: no watchdog).
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_secs(self) -> float | None:
        """Half the watchdog timeout, as systemd recommends."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, **fields: str) -> None:
        """Send ``KEY=value`` lines; a failure is logged, never raised (systemd may be gone)."""
        if self._sock is None:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(message, self._target)
        except OSError as exc:
            self._failures.warn("sd_notify failed", socket=self._address, error=str(exc))

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
