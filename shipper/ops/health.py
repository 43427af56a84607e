"""The local HTTP endpoint, served by aiohttp on the daemon's own event loop.

``GET /healthz`` answers from the event loop itself, so an answer means the
loop is responsive. ``GET /readyz`` is 200 when the daemon can do its job and
503 with the reasons when it cannot. ``GET /status`` is JSON about each file
and ``GET /metrics`` the Prometheus text format. None of them carries a
record's content or a credential: every answer goes through the output
scrubber (:mod:`shipper.redact_output`) on its way out.
"""

from __future__ import annotations

__all__ = ["HealthError", "HealthServer", "Readiness"]

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shipper.errors import ShipperError
from shipper.redact_output import OutputScrubber, output_scrubber


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
    def __init__(
        self,
        host: str,
        port: int,
        readiness: Callable[[], Readiness],
        *,
        status: Callable[[], dict[str, Any]] = dict,
        metrics: Callable[[], bytes] = bytes,
        scrubber: OutputScrubber = output_scrubber,
    ) -> None:
        self.host = host
        self.port = port
        self._readiness = readiness
        self._status = status
        self._metrics = metrics
        self._scrubber = scrubber
        # Requests are tiny: a large body or header is refused (413/400), not read.
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_page)
        app.router.add_get("/metrics", self._metrics_page)
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

    async def _status_page(self, _: web.Request) -> web.Response:
        return web.json_response(self._scrubber.data(self._status()))

    async def _metrics_page(self, _: web.Request) -> web.Response:
        # Label values name sources and paths; a few KiB of text, scraped now and then.
        body = self._scrubber.text(self._metrics().decode()).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, _: web.Request) -> web.Response:
        readiness = self._readiness()
        return web.json_response(
            {"ready": readiness.ready, "reasons": self._scrubber.data(readiness.reasons)},
            status=200 if readiness.ready else 503,
        )
