"""The local health endpoint: liveness and readiness, served by aiohttp on the daemon's loop.

``GET /healthz`` answers from the event loop itself, so an answer means the
loop is responsive. ``GET /readyz`` is 200 when the daemon can do its job and
503 with the reasons when it cannot. Neither says anything of records,
credentials or paths.
"""

from __future__ import annotations

__all__ = ["HealthError", "HealthServer", "Readiness"]

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from shipper.errors import ShipperError


class HealthError(ShipperError):
    """The health endpoint could not listen (address in use, permissions)."""


@dataclass(frozen=True, slots=True)
class Readiness:
    #: Why the daemon is not ready; empty when it is.
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons


class HealthServer:
    def __init__(self, host: str, port: int, readiness: Callable[[], Readiness]) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # Slow or idle clients are dropped; the handlers never wait on anything.
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=5.0, shutdown_timeout=1.0
        )

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise HealthError(f"health.listen {self.host}:{self.port}: {exc.strerror}") from exc
        # With port 0, the one the system picked.
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        readiness = self._readiness()
        return web.json_response(
            {"ready": readiness.ready, "reasons": readiness.reasons},
            status=200 if readiness.ready else 503,
        )
