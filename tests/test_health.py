"""The health endpoint: liveness, readiness with its reasons, and bad requests."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from shipper.ops.health import HealthError, HealthServer, Readiness


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


def test_liveness_readiness_and_bad_requests() -> None:
    reasons: list[str] = ["starting"]

    async def scenario() -> None:
        server = HealthServer("127.0.0.1", 0, lambda: Readiness(list(reasons)))
        await server.start()
        try:
            port = server.port
            assert port != 0
            assert (await request(port, get("/healthz")))[0] == 200
            status, body = await request(port, get("/readyz"))
            assert (status, orjson.loads(body)) == (503, {"ready": False, "reasons": ["starting"]})
            reasons.clear()
            status, body = await request(port, get("/readyz"))
            assert (status, orjson.loads(body)) == (200, {"ready": True, "reasons": []})
            assert (await request(port, get("/nope")))[0] == 404
            assert (await request(port, get("/readyz", "POST")))[0] == 405
            assert (await request(port, b"\x00\x01garbage\r\n\r\n"))[0] == 400
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_an_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def scenario() -> None:
            with pytest.raises(HealthError, match=f"health.listen 127.0.0.1:{port}"):
                await HealthServer("127.0.0.1", port, Readiness).start()

        asyncio.run(scenario())


def test_status_url_and_table() -> None:
    from shipper.ops.status import render_table, status_url

    assert status_url("0.0.0.0", 8686) == "http://127.0.0.1:8686/status"
    assert status_url("::", 1) == "http://[::1]:1/status"
    assert status_url("::1", 2) == "http://[::1]:2/status"
    assert status_url("10.0.0.5", 3) == "http://10.0.0.5:3/status"
    table = render_table(
        {
            "files": [
                {
                    "source": "app",
                    "path": "/l/app.log",
                    "size": 10,
                    "checkpoint": 4,
                    "lag_bytes": 6,
                    "last_write": 0,
                    "state": "open",
                    "stale": True,
                }
            ],
            "spool": {"bytes": 5, "entries": 1},
            "uploads": {"last_success": None},
            "readiness": {"ready": False, "reasons": ["starting"]},
        }
    )
    assert "/l/app.log" in table and "open STALE" in table and "1970-01-01 00:00:00" in table
    assert "ready: no\n  - starting" in table and "last upload: -" in table
