"""Liveness, readiness and Prometheus metrics over a tiny asyncio HTTP/1.1 responder (loopback only).

``GET /live`` → 200 while the agent serves its socket; ``GET /ready`` → 200 while the identity source
can answer callers, PQC credentials are served and the PQC CA answered within ``pqc.ca_ready_window``
(503 otherwise; see ``Agent.ready``);
``GET /metrics`` → Prometheus text format 0.0.4; ``GET /status`` → the status document
(:mod:`spire_pqc.agent.status`, JSON). One request per connection, bounded request head,
nothing else is parsed: this is an operations port, not a web server.

Any local user can reach a loopback port, so each uid (the owner of the connecting socket, from the
kernel: :func:`~spire_pqc.agent.localpeer.tcp_peer_uid`) may hold at most :data:`MAX_PER_UID`
connections at once; more are closed at once (``on_refused`` counts them). A probe from another
user is still answered while one user floods the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc.agent.localpeer import tcp_peer_uid
from spire_pqc.agent.metrics import CONTENT_TYPE
from spire_pqc.agent.sockets import deepen_backlog, listen_error

log = logging.getLogger(__name__)

MAX_HEAD = 8192
MAX_PER_UID = 8  # a probe needs one; a scraper two or three
ACCEPT_BATCH = 16  # connections asyncio accepts per wake-up (each holds a descriptor until handled)
LISTEN_BACKLOG = 1024
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    500: "Internal Server Error",
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
        status: Callable[[], str] = lambda: "{}\n",
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self._host, self._port = host, port
        self._live, self._ready, self._metrics, self._status = live, ready, metrics, status
        self._on_refused = on_refused
        self._server: asyncio.Server | None = None
        self._per_uid: Counter[int | None] = Counter()
        self._log = LogLimiter()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("health server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, self._host, self._port, limit=MAX_HEAD, backlog=ACCEPT_BATCH
            )
        except OSError as exc:
            raise listen_error("health.listen_address", self._host, self._port, exc) from None
        deepen_backlog(self._server, LISTEN_BACKLOG)
        log.info("health and metrics on http://%s:%d (/live /ready /metrics /status)", self._host, self.port)

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
        if path == "/status":
            return 200, "application/json", self._status()
        return 404, "text/plain", "not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid: int | None = tcp_peer_uid(writer.get_extra_info("socket"))
        except OSError:
            uid = None  # not a local socket we can attribute: all such peers share one budget
        if self._per_uid[uid] >= MAX_PER_UID:
            self._on_refused()
            self._log.log(
                log, logging.WARNING, f"uid {uid}",
                "health port: uid %s holds %d connections; closing its new ones", uid, MAX_PER_UID,
            )  # fmt: skip
            writer.transport.abort()
            return
        self._per_uid[uid] += 1
        try:
            await self._answer_one(reader, writer)
        finally:
            self._per_uid[uid] -= 1
            if self._per_uid[uid] <= 0:
                del self._per_uid[uid]

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
        except (
            TimeoutError,
            ValueError,
            UnicodeDecodeError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            status, content_type, body = 400, "text/plain", "bad request\n"
        else:
            try:
                status, content_type, body = self._answer(method, path.split("?", 1)[0])
            except Exception:  # a bug of ours: answer it, never leave the prober hanging until it times out
                log.exception("health port: %s %s failed", method, path)
                status, content_type, body = 500, "text/plain", "internal error (see the agent's log)\n"
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
