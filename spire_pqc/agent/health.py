"""Liveness, readiness and Prometheus metrics over a tiny asyncio HTTP/1.1 responder (loopback only).

``GET /live`` → 200 while the agent serves its socket; ``GET /ready`` → 200 once the identity source
can answer callers and PQC credentials are served (503 otherwise; see ``Agent.ready``);
``GET /metrics`` → Prometheus text format 0.0.4. One request per connection, bounded request head,
nothing else is parsed: this is an operations port, not a web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from spire_pqc.agent.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_HEAD = 8192
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        live: Callable[[], bool],
        ready: Callable[[], bool],
        metrics: Callable[[], str],
    ) -> None:
        self._host, self._port = host, port
        self._live, self._ready, self._metrics = live, ready, metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("health server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=MAX_HEAD)
        log.info("health and metrics on http://%s:%d (/live /ready /metrics)", self._host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[int, str, str]:
        if method != "GET":
            return 405, "text/plain", "only GET\n"
        if path == "/live":
            ok = self._live()
            return (200 if ok else 503), "text/plain", "live\n" if ok else "not live\n"
        if path == "/ready":
            ok = self._ready()
            return (200 if ok else 503), "text/plain", "ready\n" if ok else "not ready\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE, self._metrics()
        return 404, "text/plain", "not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
            status, content_type, body = self._answer(method, path.split("?", 1)[0])
        except (
            TimeoutError,
            ValueError,
            UnicodeDecodeError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            status, content_type, body = 400, "text/plain", "bad request\n"
        payload = body.encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
