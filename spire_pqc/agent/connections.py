"""The agent's Unix-socket gRPC server and what it bounds for each local user.

The one module that knows how grpclib exposes connections and request bodies. Every local user can
connect to the agent's socket (callers are told apart by SO_PEERCRED), so what one uid can make the
agent hold is bounded here (docs/security.md):

* **connections per uid** — the agent's own accept loop (:class:`_Listener`) reads SO_PEERCRED right
  after accept(2); beyond ``max_connections_per_uid`` the connection gets an HTTP/2 GOAWAY
  (ENHANCE_YOUR_CALM, "too many connections from uid N") and is closed before any asyncio transport
  exists — a few system calls, its descriptor released at once — so a flood is drained from the
  kernel's queue quickly and other uids are unaffected;
* **idle connections** — a connection with no request in progress for ``idle_timeout`` is closed
  (clients reconnect transparently when they next call);
* **streams per uid** — at most ``max_streams_per_uid`` requests in progress (RESOURCE_EXHAUSTED);
* **request size** — :meth:`ConnectionRegistry.read_request` reads the 5-byte gRPC prefix first
  and refuses a message over 4 MiB (grpc-go's and SPIRE's limit) before reading any of its body, and
  one uid's bodies being read at once to 16 MiB; HTTP/2 flow-control windows of 64 KiB bound what a
  peer can push ahead of that.

Callers are attested when the connection is accepted (:class:`~spire_pqc.agent.peercred.PeerTracker`)
and checked again before every answer. Counters go to :class:`~spire_pqc.agent.metrics.Metrics`;
refusals are logged at most once per interval and kind (:class:`~spire_pqc._internal.ratelimit.LogLimiter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpclib.server
import h2.config
import h2.connection
import h2.errors
from google.protobuf.message import DecodeError, Message
from grpclib.config import Configuration
from grpclib.encoding.proto import ProtoCodec, ProtoStatusDetailsCodec
from grpclib.protocol import H2Protocol

from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc.agent.config import Limits
from spire_pqc.agent.grpchealth import UnimplementedFallback
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.model import Caller
from spire_pqc.agent.peercred import PeerTracker, peer_credentials
from spire_pqc.errors import RequestRefusedError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

ACCEPT_BATCH = 64  # accept(2) calls per wake-up; refused connections are closed within the same call
ACCEPT_RETRY = 1.0  # seconds without accepting after a failed accept(2), as asyncio does
LISTEN_BACKLOG = 4096  # many workloads reconnect at once after an agent restart (capped by somaxconn)
H2_WINDOW = 65_535  # the smallest HTTP/2 window: what a peer may send before we read is bounded by it
_PREFIX = 5  # compressed flag (1 byte) + big-endian message length (4 bytes)


@functools.lru_cache(maxsize=256)
def _goaway(uid: int | None) -> bytes:
    """Server preface + GOAWAY(ENHANCE_YOUR_CALM): a gRPC client reports the reason to its user."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.close_connection(
        error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
        additional_data=f"too many connections from uid {uid}".encode(),
    )
    return conn.data_to_send()


class _Connection(asyncio.Protocol):
    """One admitted connection: grpclib's H2Protocol, plus its uid, idle timer and request count."""

    def __init__(self, inner: H2Protocol, registry: ConnectionRegistry, uid: int | None) -> None:
        self._inner = inner
        self._registry = registry
        self._transport: asyncio.BaseTransport | None = None
        self.uid = uid  # admitted by the accept loop, which counted it for this uid already
        self.admitted = False
        self.active_streams = 0
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._registry.attach(self, transport)
        self.admitted = True
        self._inner.connection_made(transport)
        self._mark_idle()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self.admitted:
            self._registry.forget(self, self._transport)
            self._inner.connection_lost(exc)

    # --- activity ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close after writing what is buffered (final statuses already queued)."""
        if self._transport is not None:
            self._transport.close()

    def stream_started(self) -> None:
        self.active_streams += 1

    def stream_ended(self) -> None:
        self.active_streams -= 1
        if self.active_streams == 0:
            self._mark_idle()

    def _mark_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(self._registry.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._transport is None or self._transport.is_closing():
            return
        timeout = self._registry.idle_timeout
        loop = asyncio.get_running_loop()
        if self.active_streams == 0:
            remaining = self._last_active + timeout - loop.time()
            if remaining <= 0:
                self._registry.closed_idle(self)
                self._transport.close()
                return
        else:
            remaining = timeout
        self._idle_timer = loop.call_later(max(remaining, 0.01), self._check_idle)


class ConnectionRegistry:
    """Open connections and streams per uid, the limits on them, and bounded request reading."""

    def __init__(self, tracker: PeerTracker, limits: Limits, metrics: Metrics) -> None:
        self.tracker = tracker
        self.limits = limits
        self.idle_timeout = limits.idle_timeout.total_seconds()
        self.metrics = metrics
        self._by_transport: dict[int, _Connection] = {}
        self._per_uid: Counter[int | None] = Counter()
        self._streams_per_uid: Counter[int | None] = Counter()
        self._reading_per_uid: Counter[int | None] = Counter()
        self._log = LogLimiter()

    @property
    def connections(self) -> int:
        return len(self._by_transport)

    def connections_of(self, uid: int | None) -> int:
        return self._per_uid[uid]

    def accept(self, sock: socket.socket) -> int | _Refused | None:
        """Count a just-accepted connection for its uid, or refuse it (GOAWAY, closed) over the cap."""
        try:
            uid: int | None = peer_credentials(sock).uid
        except (OSError, ValueError):
            uid = None  # no credentials: attestation records why, and every request is refused
        if self._per_uid[uid] >= self.limits.max_connections_per_uid:
            self.metrics.connections_closed.labels(reason="per_uid_cap").inc()
            self._log.log(
                log, logging.WARNING, f"cap:{uid}",
                "uid %s reached its connection cap (limits.max_connections_per_uid = %d); closing its new "
                "connections", uid, self.limits.max_connections_per_uid,
            )  # fmt: skip
            with contextlib.suppress(OSError):  # best effort: the client learns why
                sock.send(_goaway(uid), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            sock.close()
            return REFUSED
        self._per_uid[uid] += 1
        return uid

    def release(self, uid: int | None) -> None:
        """A counted connection is gone (or never got its transport)."""
        self._per_uid[uid] -= 1
        if self._per_uid[uid] <= 0:
            del self._per_uid[uid]

    def attach(self, conn: _Connection, transport: asyncio.BaseTransport) -> None:
        """The admitted connection's transport exists: attest its caller (peercred) and track it."""
        self.tracker.on_connect(transport)
        self._by_transport[id(transport)] = conn

    def accept_failed(self, exc: OSError) -> None:
        self.metrics.accept_errors.inc()
        self._log.log(
            log, logging.ERROR, "accept",
            "accept() failed: %s; new connections wait in the kernel's queue (retrying in %gs)",
            exc.strerror or exc, ACCEPT_RETRY,
        )  # fmt: skip

    def forget(self, conn: _Connection, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and self._by_transport.pop(id(transport), None) is not None:
            self.tracker.on_disconnect(transport)
            self.release(conn.uid)

    def closed_idle(self, conn: _Connection) -> None:
        self.metrics.connections_closed.labels(reason="idle_timeout").inc()
        self._log.log(
            log, logging.INFO, "idle",
            "closed an idle connection of uid %s (no request for limits.idle_timeout = %gs)",
            conn.uid, self.idle_timeout,
        )  # fmt: skip

    def close_all(self) -> None:
        for conn in list(self._by_transport.values()):
            conn.close()

    # --- per request -------------------------------------------------------------------------------

    @staticmethod
    def _transport(stream: grpclib.server.Stream[Any, Any]) -> asyncio.BaseTransport:
        # grpclib keeps the asyncio transport on Peer._transport; it is the object admit() saw.
        transport: asyncio.BaseTransport = stream.peer._transport
        return transport

    def caller(self, stream: grpclib.server.Stream[Any, Any], answered: object | None = None) -> Caller:
        """The validated caller of a request (AuthorizationError / CallerChanged otherwise); ``answered``
        is the state about to be sent, if any (:meth:`PeerTracker.caller`)."""
        return self.tracker.caller(self._transport(stream), answered)

    def describe(self, stream: grpclib.server.Stream[Any, Any]) -> str:
        """``uid U pid P, /Service/Method`` of a request, for log lines."""
        record = self.tracker.record(self._transport(stream))
        who = (
            "caller unknown"
            if record is None or record.caller is None
            else (f"uid {record.caller.uid} pid {record.caller.pid}")
        )
        return f"{who}, {stream._method_name}"

    @contextlib.contextmanager
    def active(self, stream: grpclib.server.Stream[Any, Any]) -> Iterator[None]:
        """A request in progress: the connection is not idle; the uid's stream count is bounded."""
        conn = self._by_transport.get(id(self._transport(stream)))
        if conn is None:  # the connection is already gone
            yield
            return
        if self._streams_per_uid[conn.uid] >= self.limits.max_streams_per_uid:
            raise RequestRefusedError(
                f"uid {conn.uid} has {self.limits.max_streams_per_uid} requests in progress "
                "(limits.max_streams_per_uid)",
                reason="too_many_streams",
            )
        self._streams_per_uid[conn.uid] += 1
        conn.stream_started()
        try:
            yield
        finally:
            conn.stream_ended()
            self._streams_per_uid[conn.uid] -= 1
            if self._streams_per_uid[conn.uid] <= 0:
                del self._streams_per_uid[conn.uid]

    @contextlib.contextmanager
    def _reading(self, stream: grpclib.server.Stream[Any, Any], length: int) -> Iterator[None]:
        """Reserve ``length`` bytes of the uid's budget for request bodies being read (many streams of
        one uid each announcing 4 MiB and sending slowly would otherwise hold 4 MiB each)."""
        conn = self._by_transport.get(id(self._transport(stream)))
        uid = conn.uid if conn is not None else None
        budget = self.limits.max_request_bytes_per_uid
        if self._reading_per_uid[uid] + length > budget:
            raise RequestRefusedError(
                f"uid {uid} is already sending {self._reading_per_uid[uid]} bytes of requests (at most {budget})",
                reason="too_many_bytes",
            )
        self._reading_per_uid[uid] += length
        try:
            yield
        finally:
            self._reading_per_uid[uid] -= length
            if self._reading_per_uid[uid] <= 0:
                del self._reading_per_uid[uid]

    async def read_request(self, stream: grpclib.server.Stream[Any, Any], message_type: type[M]) -> M:
        """The single request message of a unary-request RPC, read within the limits.

        The length prefix is checked before any body byte is read; the message must arrive within the
        idle timeout, and the uid's bodies being read at once are bounded. Raises
        :class:`RequestRefusedError` (reason ``message_too_large``, ``too_many_bytes``,
        ``malformed_request`` or ``request_timeout``).
        """
        raw = stream._stream  # grpclib.protocol.Stream: its buffer acknowledges only what is read
        limit = self.limits.max_message_size
        try:
            async with asyncio.timeout(self.idle_timeout):
                prefix = await raw.recv_data(_PREFIX)
                if len(prefix) != _PREFIX:
                    raise RequestRefusedError("the request carries no message", reason="malformed_request")
                if prefix[0] != 0:
                    raise RequestRefusedError(
                        f"compressed-flag {prefix[0]} although no message encoding was negotiated",
                        reason="malformed_request",
                    )
                length = int.from_bytes(prefix[1:], "big")
                if length > limit:
                    raise RequestRefusedError(
                        f"request message of {length} bytes is larger than the maximum of {limit} bytes",
                        reason="message_too_large",
                    )
                with self._reading(stream, length):
                    body = await raw.recv_data(length) if length else b""
        except TimeoutError:
            raise RequestRefusedError(
                f"no complete request message within {self.idle_timeout:g}s", reason="request_timeout"
            ) from None
        except AssertionError:  # grpclib's buffer: the stream ended before the announced bytes
            raise RequestRefusedError(
                "the request ended before its announced length", reason="malformed_request"
            ) from None
        try:
            return message_type.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise RequestRefusedError(
                f"malformed request message: {exc}", reason="malformed_request"
            ) from exc


class _Refused:
    """The marker :meth:`ConnectionRegistry.accept` returns for a connection it closed."""


REFUSED = _Refused()


class _Listener(asyncio.AbstractServer):
    """The accept loop of the agent socket, in place of asyncio's server.

    asyncio accepts a batch of connections and creates a task, then a transport, for each before any
    protocol code runs, so every connection of a flood holds a descriptor for several loop iterations
    and costs tens of microseconds. Here the per-uid cap is applied right after accept(2); only
    admitted connections become transports (``loop.connect_accepted_socket``). Failed accepts
    (out of descriptors) pause the loop for :data:`ACCEPT_RETRY` seconds, counted and logged once per
    interval. ``close`` / ``wait_closed`` are what grpclib's ``Server.close`` expects of its server.
    """

    def __init__(self, sock: socket.socket, server: PeerCredServer) -> None:
        self._sock = sock
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        sock.setblocking(False)
        sock.listen(LISTEN_BACKLOG)
        self._loop.add_reader(sock.fileno(), self._ready)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._closed

    async def start_serving(self) -> None:
        return None  # serving since construction

    async def serve_forever(self) -> None:
        raise NotImplementedError("the agent starts and stops its server itself (Agent.start/close)")

    def _ready(self) -> None:
        registry = self._server.registry
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM: try again in a moment
                registry.accept_failed(exc)
                self._loop.remove_reader(self._sock.fileno())
                self._retry = self._loop.call_later(ACCEPT_RETRY, self._resume)
                return
            uid = registry.accept(conn)
            if isinstance(uid, _Refused):
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn, uid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, uid: int | None) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: self._server.connection(uid), conn)
        except OSError:
            self._server.registry.release(uid)
            conn.close()

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class Encoded:
    """A response message already serialized: sent as these bytes, without serializing it again.

    Many streams send the same state (:mod:`spire_pqc.agent.perstate`); each passes the one
    serialization to ``Stream.send_message`` (grpclib would otherwise serialize per stream).
    """

    message_type: type[Message]
    data: bytes


class _EncodedProtoCodec(ProtoCodec):
    """grpclib's protobuf codec, passing :class:`Encoded` messages through as their bytes."""

    def encode(self, message: Any, message_type: type[Any]) -> bytes:
        if isinstance(message, Encoded):
            if message.message_type is not message_type:
                raise TypeError(f"message must be of type {message_type!r}, not {message.message_type!r}")
            return message.data
        return super().encode(message, message_type)


class PeerCredServer(grpclib.server.Server):
    """A grpclib server whose connections are admitted, attested and bounded by a registry."""

    def __init__(self, handlers: Any, registry: ConnectionRegistry) -> None:
        super().__init__(
            handlers,
            codec=_EncodedProtoCodec(),
            status_details_codec=ProtoStatusDetailsCodec(),
            config=Configuration(http2_connection_window_size=H2_WINDOW, http2_stream_window_size=H2_WINDOW),
        )
        # Unknown methods: a proper UNIMPLEMENTED (grpclib's own answer lacks content-type).
        self._mapping = UnimplementedFallback(self._mapping)
        self.registry = registry

    async def serve(self, sock: socket.socket) -> None:
        """Start accepting on a bound Unix socket (instead of ``start``, which uses asyncio's server)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        # grpclib's close() and wait_closed() use these two attributes (guarded by test_peercred.py).
        self._server = _Listener(sock, self)
        self._server_closed_fut = asyncio.get_running_loop().create_future()

    @property
    def connections(self) -> int:
        return self.registry.connections

    def close_connections(self) -> None:
        """grpclib's close() stops listening and cancels handlers but keeps connections open; a
        stopped agent must drop them so clients reconnect (to its successor) instead of reusing them."""
        self.registry.close_all()

    def connection(self, uid: int | None) -> _Connection:
        """The protocol of one admitted connection: grpclib's own (one Handler per connection,
        ``Server._protocol_factory`` in grpclib 0.4.x) inside ours."""
        return _Connection(self._protocol_factory(), self.registry, uid)
