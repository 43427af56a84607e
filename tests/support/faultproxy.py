"""A TCP proxy in front of the S3 store that injects faults into PUT requests.

Requests pass through untouched unless a fault is queued for the next PUT, or
the PUT's key contains a string told to be rejected. Each request gets its own
upstream connection (``Connection: close`` is added), so every request is seen.

Faults: an error response (``500``, ``503 SlowDown``, ``403 AccessDenied``, a
permanent ``400 InvalidArgument`` by key), a connection reset in the middle of
the body, a stall (no answer, then the connection closes), and a hold: the
request reaches the store and is answered, but the answer is held back until
the client goes away (a crash between the store's write and our hearing of it).
"""

from __future__ import annotations

__all__ = ["FaultProxy"]

import asyncio
import collections
import socket
import struct
import threading
import urllib.parse
from collections import Counter

_ERRORS = {
    "500": (500, "InternalError"),
    "503": (503, "SlowDown"),
    "403": (403, "AccessDenied"),
    "400": (400, "InvalidArgument"),
}


class FaultProxy:
    def __init__(self, upstream_port: int, *, stall_secs: float = 5.0) -> None:
        self.upstream_port = upstream_port
        self.stall_secs = stall_secs
        #: Faults for the next PUTs, in order: "500", "503", "403", "reset", "stall".
        self.queued: collections.deque[str] = collections.deque()
        #: PUTs whose key contains one of these are refused with a permanent 400.
        self.reject_keys: set[str] = set()
        self.injected: Counter[str] = Counter()
        #: Queued faults go only to PUTs whose target contains this (e.g. "partNumber=2").
        self.only: str | None = None
        #: Set while a held answer waits for its client to go away.
        self.holding = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the fault proxy did not start"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def queue(self, *faults: str) -> None:
        with self._lock:
            self.queued.extend(faults)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def _fault_for(self, method: str, target: str) -> str | None:
        if method != "PUT":
            return None
        with self._lock:
            if any(part in target for part in self.reject_keys):
                return "400"
            if self.only is not None and self.only not in target:
                return None
            return self.queued.popleft() if self.queued else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method, target = head.split(b" ", 2)[:2]
        fault = self._fault_for(method.decode(), urllib.parse.unquote(target.decode()))
        if fault is not None:
            self.injected[fault] += 1
        try:
            if fault in _ERRORS:
                await self._respond_error(writer, *_ERRORS[fault])
            elif fault == "reset":
                await self._reset_mid_body(head, reader, writer)
            elif fault == "stall":
                await asyncio.sleep(self.stall_secs)
                writer.close()
            elif fault == "hold":
                await self._hold_answer(head, reader, writer)
            else:
                await self._pass_through(head, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()

    @staticmethod
    async def _respond_error(writer: asyncio.StreamWriter, status: int, code: str) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
        ).encode()
        writer.write(
            f"HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    @staticmethod
    async def _reset_mid_body(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if b"100-continue" in head.lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        await reader.read(1)  # the body has started to arrive
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Close with a reset (RST), not an orderly shutdown.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _hold_answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward the request; keep the store's answer until the client hangs up."""
        up_reader, up_writer = await self._open_upstream(head)
        sending = asyncio.ensure_future(self._pipe(reader, up_writer))
        answer = await up_reader.read()  # the store closes after its answer
        self.holding.set()
        try:
            await asyncio.wait_for(asyncio.shield(sending), self.stall_secs)
        except asyncio.TimeoutError:
            writer.write(answer)  # nobody came to kill the client: let it go on
            await writer.drain()
        finally:
            self.holding.clear()
            writer.close()

    async def _open_upstream(
        self, head: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        lines = head.split(b"\r\n")
        kept = [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
        up_writer.write(b"\r\n".join([lines[0], b"Connection: close", *kept]))
        await up_writer.drain()
        return up_reader, up_writer

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    async def _pass_through(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await self._open_upstream(head)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
