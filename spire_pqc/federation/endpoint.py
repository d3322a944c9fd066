"""The PQC bundle endpoint: HTTPS (``https_spiffe`` profile) serving a trust domain's signed PQC bundle.

As SPIFFE Federation's ``https_spiffe`` profile asks, the server authenticates with an X509-SVID (the
trust domain's classical server SVID) and clients do not authenticate. The TLS is the channel's
(:func:`spire_pqc.channel.context.base_context`: TLS 1.3, X25519MLKEM768 only, no resumption) over
the channel's non-blocking asyncio TLS (:class:`~spire_pqc.channel.tlsproto.TlsProtocol`), so a
recorded exchange cannot be decrypted later. One request per connection (HTTP/1.1, ``Connection:
close``), parsed by h11 with bounded sizes; connections in flight are capped in all and per client
address (so one client holding idle connections cannot keep the other trust domains' agents out), and
time out.

``GET <path>`` answers ``200`` with the bundle document (``application/json``) and its detached JWS in
the ``Spire-Pqc-Bundle-Signature`` header; other paths ``404``, other methods ``405``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import h11
from cryptography import x509
from OpenSSL import SSL

from spire_pqc._internal.peerslots import PeerSlots, peer_host
from spire_pqc.channel.context import base_context
from spire_pqc.channel.tlsproto import TlsProtocol
from spire_pqc.errors import SpirePqcError, UnavailableError
from spire_pqc.federation.document import SIGNATURE_HEADER, SignedBundle

__all__ = ["BundleEndpointServer", "ServerSvid", "server_context"]

log = logging.getLogger(__name__)

#: The classical server SVID the endpoint presents: (chain leaf first, private key).
ServerSvid = tuple[Sequence[x509.Certificate], Any]

MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_ADDRESS = 8
MAX_REQUEST_BYTES = 8 * 1024
DEFAULT_TIMEOUT = 10.0
# OpenSSL's SSL_MODE_NO_AUTO_CHAIN (as in channel/context.py): send exactly the SVID chain.
_SSL_MODE_NO_AUTO_CHAIN = 0x00000008


def server_context(chain: Sequence[x509.Certificate], key: Any) -> SSL.Context:
    """The channel's TLS policy, presenting ``chain``, asking no client certificate (https_spiffe)."""
    ctx = base_context()
    ctx.set_verify(SSL.VERIFY_NONE)
    ctx.use_certificate(chain[0])
    for cert in chain[1:]:
        ctx.add_extra_chain_cert(cert)
    ctx.set_mode(_SSL_MODE_NO_AUTO_CHAIN)
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    return ctx


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class BundleEndpointServer:
    """Serves ``document()`` on ``path``; ``svid()`` gives the classical SVID to present (both are read
    per connection, so rotations apply to the next one). ``async with`` closes it."""

    def __init__(
        self,
        *,
        document: Callable[[], SignedBundle],
        svid: Callable[[], ServerSvid],
        path: str = "/",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        self._document = document
        self._svid = svid
        self._path = path.encode()
        self._timeout = timeout
        self._max_connections = max_connections
        self._slots = PeerSlots(total=max_connections, per_peer=max_connections_per_address)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._context: tuple[int, SSL.Context] | None = None
        self.served = 0
        self.refused = 0

    async def start(self, host: str, port: int) -> None:
        if self._server is not None:
            raise RuntimeError("the bundle endpoint is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the bundle endpoint is not started")
        return int(self._server.sockets[0].getsockname()[1])

    def _current_context(self) -> SSL.Context:
        chain, key = self._svid()
        marker = hash((tuple(chain), id(key)))
        if self._context is None or self._context[0] != marker:
            self._context = (marker, server_context(chain, key))
        return self._context[1]

    def _protocol(self) -> asyncio.Protocol:
        if len(self._tasks) >= self._max_connections:
            self.refused += 1
            return _Refuse()
        try:
            context = self._current_context()
        except (SpirePqcError, SSL.Error, ValueError) as exc:
            self.refused += 1
            log.warning("bundle endpoint: no server SVID to present (%s)", exc)
            return _Refuse()
        slot: list[str] = []  # the client's host, once admitted
        proto = TlsProtocol(context, server_side=True, admit=lambda t: self._admit(t, slot))
        task = asyncio.get_running_loop().create_task(self._serve(proto, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return proto

    def _admit(self, transport: asyncio.BaseTransport, slot: list[str]) -> bool:
        host = peer_host(transport)
        if not self._slots.take(host):
            self.refused += 1
            log.debug("bundle endpoint: refusing a connection from %s (connection cap reached)", host)
            return False
        slot.append(host)
        return True

    async def _serve(self, proto: TlsProtocol, slot: list[str]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await proto.handshake()
                reader = asyncio.StreamReader(limit=MAX_REQUEST_BYTES)
                app = asyncio.StreamReaderProtocol(reader)
                transport = proto.attach(app, {})
                writer = asyncio.StreamWriter(transport, app, reader, asyncio.get_running_loop())
                await self._answer(reader, writer)
        except (TimeoutError, ConnectionError, SpirePqcError, h11.ProtocolError) as exc:
            # A client's failure (slow, aborted, not TLS, bad HTTP): one line, never a traceback.
            log.debug("bundle endpoint: connection ended: %s", exc)
        finally:
            proto.close()
            for host in slot:
                self._slots.release(host)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        request: h11.Request | None = None
        while request is None:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return
            elif isinstance(event, h11.Request):
                request = event
            else:
                return
        status, headers, body = self._response(request)
        headers = [*headers, (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    def _response(self, request: h11.Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if request.method != b"GET":
            return 405, [(b"Allow", b"GET")], b""
        if request.target.split(b"?", 1)[0] != self._path:
            return 404, [], b""
        try:
            signed = self._document()
        except (SpirePqcError, UnavailableError) as exc:
            log.warning("bundle endpoint: no bundle document to serve (%s)", exc)
            return 503, [], b""
        self.served += 1
        headers = [
            (b"Content-Type", b"application/json"),
            (SIGNATURE_HEADER.encode(), signed.signature.encode()),
        ]
        return 200, headers, signed.document

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> BundleEndpointServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()
