"""asyncio streams over verified post-quantum channels: ``open_connection`` and ``start_server``.

They mirror :func:`asyncio.open_connection` / :func:`asyncio.start_server`, plus what SPIFFE needs:
a :class:`~spire_pqc.source.HybridSource` (the local hybrid SVID and, read at every handshake, the
bundles that verify peers per trust domain) and a required authorizer. The returned
:class:`SecureStreamWriter` tells who the peer is (``peer_id()``), which
key exchange was negotiated (``group``, always X25519MLKEM768) and the ``mode``.

Example::

    reader, writer = await open_connection(
        "127.0.0.1", 8443, source=source, authorizer=authorize_id("spiffe://example.org/api")
    )
    writer.write(b"ping")
    await writer.drain()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from OpenSSL import SSL

from spire_pqc._internal.peerslots import PeerSlots, peer_host
from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc.channel.authorize import Authorizer, check_authorizer
from spire_pqc.channel.context import context_for
from spire_pqc.channel.session import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PROOF_TIMEOUT,
    ConnectionInfo,
    establish,
)
from spire_pqc.channel.sources import ChannelConfig, Mode
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.errors import SpirePqcError, UnavailableError
from spire_pqc.source import HybridSource
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.svid import HybridSvid

log = logging.getLogger(__name__)

_STREAM_LIMIT = 64 * 1024
EXTRA_INFO_KEY = "spire_pqc"
# Connections in setup (TLS handshake and PQ proofs) at once, in all and per peer address: each holds
# OpenSSL's handshake state, and a peer that opens and abandons handshakes must not grow the server
# without bound. Beyond either, a connection is closed before any of it is read.
MAX_SETUP = 64
MAX_SETUP_PER_PEER = 16


class SecureStreamWriter(asyncio.StreamWriter):
    """An :class:`asyncio.StreamWriter` that also reports the verified peer and the channel."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: asyncio.BaseProtocol,
        reader: asyncio.StreamReader,
        info: ConnectionInfo,
    ) -> None:
        super().__init__(transport, protocol, reader, asyncio.get_running_loop())
        self.info = info

    def peer_id(self) -> SpiffeId:
        return self.info.peer_id

    @property
    def group(self) -> str:
        return self.info.group

    @property
    def mode(self) -> Mode:
        return self.info.mode


class ContextCache:
    """SSL.Contexts by (mode, SVID object), most recent first, at most ``size``.

    Building a context loads the certificates and the private key into OpenSSL (about as much CPU
    as the rest of a classical handshake), so each SVID gets one; a rotated SVID is a new object and
    gets a new context, and the old one ages out. Entries hold the SVID, so an ``id`` is never reused
    while its entry lives.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Mode, int], tuple[HybridSvid, SSL.Context]] = OrderedDict()
        self._lock = threading.Lock()  # event loops in several threads may share one cache

    def get(self, mode: Mode, svid: HybridSvid) -> SSL.Context:
        key = (mode, id(svid))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is svid:
                self._entries.move_to_end(key)
                return entry[1]
        context = context_for(mode, svid)
        with self._lock:
            self._entries[key] = (svid, context)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return context


# The client contexts of every open_connection in this process.
_CLIENT_CONTEXTS = ContextCache(32)


def _streams(
    proto: TlsProtocol, info: ConnectionInfo, limit: int
) -> tuple[asyncio.StreamReader, SecureStreamWriter]:
    reader = asyncio.StreamReader(limit=limit)
    app = asyncio.StreamReaderProtocol(reader)
    transport = proto.attach(app, {EXTRA_INFO_KEY: info, "peer_id": info.peer_id})
    return reader, SecureStreamWriter(transport, app, reader, info)


async def open_connection(
    host: str,
    port: int,
    *,
    source: HybridSource,
    authorizer: Authorizer,
    mode: Mode | str = Mode.HYBRID,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    proof_timeout: float = DEFAULT_PROOF_TIMEOUT,
    limit: int = _STREAM_LIMIT,
) -> tuple[asyncio.StreamReader, SecureStreamWriter]:
    """Connect, verify the server for ``mode`` and return streams; raise a typed error otherwise."""
    authorizer = check_authorizer(authorizer)
    config = ChannelConfig(Mode.parse(mode), source)
    svid = source.get_hybrid_svid()
    context = _CLIENT_CONTEXTS.get(config.mode, svid)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: TlsProtocol(context, server_side=False), host, port)
    info = await establish(
        proto, config, svid, authorizer, handshake_timeout=handshake_timeout, proof_timeout=proof_timeout
    )
    return _streams(proto, info, limit)


ClientConnected = Callable[[asyncio.StreamReader, SecureStreamWriter], Awaitable[None] | None]


class _Refuse(asyncio.Protocol):
    """Closes an accepted connection at once (this server has no SVID to present yet)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class SecureServer:
    """A listening channel server; ``async with`` closes it. ``failures`` keeps recent refusals."""

    def __init__(
        self,
        callback: ClientConnected,
        config: ChannelConfig,
        authorizer: Authorizer,
        *,
        handshake_timeout: float,
        proof_timeout: float,
        limit: int,
    ) -> None:
        self._callback = callback
        self._config = config
        self._authorizer = authorizer
        self._handshake_timeout = handshake_timeout
        self._proof_timeout = proof_timeout
        self._limit = limit
        self._contexts = ContextCache(2)  # the current SVID and the one before a rotation
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures: deque[SpirePqcError] = deque(maxlen=64)
        self.accepted = 0
        # Called once per connection that entered setup: (peer address, None, seconds from accept to
        # ready) or (peer address, the error that ended it, seconds). Must not raise. When set, the
        # owner logs refusals (with its own context, e.g. a tunnel's name); this server does not.
        self.on_setup: Callable[[str, BaseException | None, float], None] | None = None
        self._log = LogLimiter()
        self._in_setup = PeerSlots(total=MAX_SETUP, per_peer=MAX_SETUP_PER_PEER)

    def _protocol(self) -> asyncio.Protocol:
        try:
            svid = self._config.source.get_hybrid_svid()
        except UnavailableError as exc:
            # Raising here would leave the accepted socket to the garbage collector; refuse it instead.
            # Counted in ``failures`` (bounded); not logged per connection, which any client could flood.
            self.failures.append(exc)
            log.debug("refusing a connection: no SVID to present yet (%s)", exc)
            return _Refuse()
        slot: list[str] = []  # the peer host, once admitted into setup
        peer: list[str] = []  # the peer address, for reports after the connection is gone
        proto = TlsProtocol(
            self._contexts.get(self._config.mode, svid),
            server_side=True,
            admit=lambda t: self._take_slot(t, slot, peer),
        )
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._setup(proto, svid, slot, peer, loop.time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return proto

    def _take_slot(self, transport: asyncio.BaseTransport, slot: list[str], where: list[str]) -> bool:
        peer = transport.get_extra_info("peername")
        host = peer_host(transport)
        where.append(f"{host}:{peer[1]}" if isinstance(peer, tuple) and len(peer) > 1 else host)
        if not self._in_setup.take(host):
            return False
        slot.append(host)
        return True

    def _release_slot(self, slot: list[str]) -> None:
        for host in slot:
            self._in_setup.release(host)
        slot.clear()

    def _report(self, peer: list[str], error: BaseException | None, started: float) -> bool:
        """Tell ``on_setup`` (True) or not (False: no hook, the caller logs)."""
        if self.on_setup is None:
            return False
        self.on_setup(peer[0] if peer else "(unknown)", error, asyncio.get_running_loop().time() - started)
        return True

    async def _setup(
        self, proto: TlsProtocol, svid: HybridSvid, slot: list[str], peer: list[str], started: float
    ) -> None:
        try:
            info = await establish(
                proto,
                self._config,
                svid,
                self._authorizer,
                handshake_timeout=self._handshake_timeout,
                proof_timeout=self._proof_timeout,
            )
        except SpirePqcError as exc:
            # Every refusal is kept (and counted by whoever reads ``failures``); a peer can cause
            # them at will, so the log gets one line per kind of refusal and interval.
            self.failures.append(exc)
            if self._report(peer, exc, started):
                return
            self._log.log(
                log, logging.WARNING, type(exc).__name__, "refused %s connection from %s: %s",
                self._config.mode.value, _peername(proto), exc,
            )  # fmt: skip
            return
        except (OSError, asyncio.IncompleteReadError) as exc:
            if self._report(peer, exc, started):
                return
            self._log.log(
                log, logging.INFO, "setup-io", "connection from %s failed during setup: %s", _peername(proto), exc
            )  # fmt: skip
            return
        finally:
            self._release_slot(slot)
        self.accepted += 1
        self._report(peer, None, started)
        reader, writer = _streams(proto, info, self._limit)
        try:
            result = self._callback(reader, writer)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
        except Exception:
            log.exception("connection handler for %s failed", info.peer_id)
            writer.close()

    async def start(self, host: str | None, port: int, **kwargs: Any) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.get_running_loop().create_server(self._protocol, host, port, **kwargs)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port of the first socket (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def drain(self, grace: float) -> int:
        """Stop accepting; connections already accepted (in setup or in the callback) get ``grace``
        seconds to finish, the rest are cancelled. Returns how many were cancelled."""
        if self._server is not None:
            self._server.close()
        tasks = set(self._tasks)
        if tasks and grace > 0:
            _, tasks = await asyncio.wait(tasks, timeout=grace)
        self.close()
        return len(tasks)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> SecureServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


def _peername(proto: TlsProtocol) -> str:
    raw = proto.raw
    name = raw.get_extra_info("peername") if raw is not None else None
    return str(name) if name else "(unknown)"


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None,
    port: int,
    *,
    source: HybridSource,
    authorizer: Authorizer,
    mode: Mode | str = Mode.HYBRID,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    proof_timeout: float = DEFAULT_PROOF_TIMEOUT,
    limit: int = _STREAM_LIMIT,
    **server_kwargs: Any,
) -> SecureServer:
    """Listen; ``client_connected_cb(reader, writer)`` runs only for verified, authorized peers."""
    server = SecureServer(
        client_connected_cb,
        ChannelConfig(Mode.parse(mode), source),
        check_authorizer(authorizer),
        handshake_timeout=handshake_timeout,
        proof_timeout=proof_timeout,
        limit=limit,
    )
    await server.start(host, port, **server_kwargs)
    return server
