"""TLS on asyncio over pyOpenSSL memory BIOs: never blocks the event loop, back-pressured.

:class:`TlsProtocol` sits on a raw TCP transport. Bytes from the network go into OpenSSL's read
BIO, OpenSSL's output is drained from its write BIO into the raw transport, so no OpenSSL call ever
waits on a socket. A connection has two phases:

1. *Setup* (driven by :mod:`spire_pqc.channel.session`): :meth:`TlsProtocol.handshake`, then the
   mode's peer verification, which may exchange records with :meth:`TlsProtocol.read_exactly` and
   :meth:`TlsProtocol.write`. Decrypted bytes are held here, never given to the application.
2. *Attached*: :meth:`TlsProtocol.attach` hands the verified connection to an application protocol
   (an :class:`asyncio.StreamReaderProtocol`) through :class:`TlsAppTransport`.

Back-pressure: when the application pauses reading, OpenSSL is no longer asked for plaintext and
the raw transport stops reading; when the raw transport's write buffer is above its high-water
mark, the application protocol is paused (so ``StreamWriter.drain()`` waits).

Closing: ``close()`` sends a TLS close_notify and closes the socket once its buffer is flushed;
``write_eof()`` sends close_notify only (TLS 1.3 allows half-close, RFC 8446 §6.1). A peer that
closes TCP without close_notify is reported as a truncated stream, not a clean end of file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from spire_pqc.channel.context import classify_handshake_error
from spire_pqc.errors import ChannelError, HandshakeError

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
# Encrypted output taken from OpenSSL's write BIO at once: a whole 256 KiB application write (16 TLS
# records) leaves in one raw write (one send(2)) instead of four.
_FLUSH_CHUNK = 512 * 1024
# Decrypted records handed to an attached application at once (one write(2) onward for up to 16
# records instead of one per 16 KiB record); smaller deliveries as soon as OpenSSL has no more.
_DELIVER_BATCH = 256 * 1024
_SETUP_BUFFER_LIMIT = 256 * 1024  # plaintext buffered during setup before the raw side is paused


class TruncatedStreamError(ConnectionResetError):
    """The peer closed TCP without a TLS close_notify (possible truncation attack)."""


class TlsProtocol(asyncio.Protocol):
    """One TLS 1.3 connection over a raw asyncio transport."""

    def __init__(
        self,
        context: SSL.Context,
        *,
        server_side: bool,
        admit: Callable[[asyncio.BaseTransport], bool] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # Asked when the connection is made, before any byte is read: False aborts it at once.
        self._admit = admit
        self.server_side = server_side
        self.tls = SSL.Connection(context, None)
        if server_side:
            self.tls.set_accept_state()
        else:
            self.tls.set_connect_state()
        self._raw: asyncio.Transport | None = None
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        # Mark a failed handshake as seen even when no one awaits it any more (setup timed out).
        self._handshake.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._plain = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._app: asyncio.Protocol | None = None
        self._app_transport: TlsAppTransport | None = None
        self._peer_eof = False  # close_notify received
        self._sent_close = False  # close_notify sent
        self._lost = False
        self._error: BaseException | None = None
        self._app_paused = False  # application asked us to stop reading
        self._raw_read_paused = False
        self._write_paused = False  # raw transport above its high-water mark
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.wire_received = 0  # raw TLS bytes from the network (for byte-cost measurements)
        self.wire_sent = 0

    # --- raw transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._connected.set_result(None)
        if self._admit is not None and not self._admit(transport):
            self._handshake.set_exception(
                HandshakeError("too many connections in setup from this peer (closed before the handshake)")
            )
            transport.abort()
            return
        if not self.server_side:
            self._advance()  # emits the ClientHello

    def data_received(self, data: bytes) -> None:
        self.wire_received += len(data)
        try:
            self.tls.bio_write(data)
        except SSL.Error as exc:
            self._fail(ChannelError(f"TLS input rejected: {exc}"))
            return
        self._advance()

    def eof_received(self) -> bool:
        self.tls.bio_shutdown()
        self._advance()
        if not self._handshake.done():
            self._handshake.set_exception(
                HandshakeError("the peer closed the connection during the handshake")
            )
        # Keep the socket open only while a half-closed application still wants to write.
        return self._peer_eof and self._app is not None and not self._sent_close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if not self._handshake.done():
            self._handshake.set_exception(
                HandshakeError(f"connection lost during the TLS handshake: {exc or 'closed by peer'}")
            )
        clean = self._peer_eof or self._sent_close or self._error is not None
        if exc is None and not clean and self._handshake.done():
            exc = TruncatedStreamError("the peer closed the connection without a TLS close_notify")
        if self._error is None and exc is not None:
            self._error = exc
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(self._error if isinstance(self._error, Exception) else exc)
        self._raw = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self._app is not None:
            self._app.resume_writing()

    # --- the TLS engine ----------------------------------------------------------------------

    def _advance(self) -> None:
        if not self._handshake.done():
            try:
                self.tls.do_handshake()
            except SSL.WantReadError:
                self._flush()
                return
            except (SSL.Error, HandshakeError) as exc:
                self._flush()  # deliver our alert to the peer
                error = (
                    exc
                    if isinstance(exc, HandshakeError)  # raised by our own ALPN callback (mode mismatch)
                    else classify_handshake_error(exc, server_side=self.server_side)
                )
                self._handshake.set_exception(error)
                self._fail(error)
                return
            self._flush()
            self._handshake.set_result(None)
        self._pump_plaintext()

    def _pump_plaintext(self) -> None:
        batch: list[bytes] = []
        batched = 0
        while not self._app_paused and not self._peer_eof and self._error is None:
            if self._app is None and len(self._plain) >= _SETUP_BUFFER_LIMIT:
                self._pause_raw_reading()
                break
            try:
                chunk = self.tls.recv(_READ_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._peer_eof = True
                batch, batched = self._deliver(batch)
                self._deliver_eof()
                break
            except SSL.SysCallError:
                # Raw EOF without close_notify (bio_shutdown was called).
                self._fail(TruncatedStreamError("the peer closed the connection without a TLS close_notify"))
                break
            except SSL.Error as exc:
                self._fail(ChannelError(f"TLS error: {exc}"))
                break
            if self._app is not None:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _DELIVER_BATCH:
                    batch, batched = self._deliver(batch)
            else:
                self._plain += chunk
                self._wake()
        self._deliver(batch)
        self._flush()

    def _deliver(self, batch: list[bytes]) -> tuple[list[bytes], int]:
        """Hand the batched plaintext to the application (if it is still there); an empty batch."""
        if batch and self._app is not None:
            self._app.data_received(batch[0] if len(batch) == 1 else b"".join(batch))
        return [], 0

    def _flush(self) -> None:
        while True:
            try:
                data = self.tls.bio_read(_FLUSH_CHUNK)
            except SSL.WantReadError:
                return
            if self._raw is not None and not self._raw.is_closing():
                self.wire_sent += len(data)
                self._raw.write(data)

    def _deliver_eof(self) -> None:
        if self._app is None:
            self._wake()
            return
        keep_open = self._app.eof_received()
        if not keep_open or self._sent_close:
            self.close()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()
        if self._raw is not None:
            self._raw.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause_raw_reading(self) -> None:
        if self._raw is not None and not self._raw_read_paused:
            self._raw_read_paused = True
            self._raw.pause_reading()

    def _resume_raw_reading(self) -> None:
        if self._raw is not None and self._raw_read_paused:
            self._raw_read_paused = False
            self._raw.resume_reading()

    # --- setup phase API ---------------------------------------------------------------------

    async def handshake(self) -> None:
        """Wait until the TLS handshake completes; raises HandshakeError (typed) on failure."""
        await self._connected
        await asyncio.shield(self._handshake)

    async def read_exactly(self, n: int) -> bytes:
        """Read ``n`` decrypted bytes during setup; IncompleteReadError if the peer ends first."""
        while len(self._plain) < n:
            if self._error is not None:
                raise ConnectionError(f"channel failed: {self._error}")
            if self._peer_eof or self._lost:
                partial = bytes(self._plain)
                self._plain.clear()
                raise asyncio.IncompleteReadError(partial, n)
            self._resume_raw_reading()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._plain[:n])
        del self._plain[:n]
        if self._raw_read_paused and len(self._plain) < _SETUP_BUFFER_LIMIT:
            self._resume_raw_reading()
            self._pump_plaintext()
        return data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` (memory BIO: OpenSSL never blocks, the raw transport buffers)."""
        if self._sent_close or self._raw is None or self._raw.is_closing():
            raise ConnectionResetError("the TLS channel is closed")
        if not data:
            return
        try:
            self.tls.sendall(bytes(data))
        except SSL.Error as exc:
            self._fail(ChannelError(f"TLS write failed: {exc}"))
            raise ConnectionResetError(f"TLS write failed: {exc}") from exc
        self._flush()

    async def drain(self) -> None:
        """Wait while the raw transport's write buffer is above its high-water mark."""
        if self._write_paused and not self._lost:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost:
            raise ConnectionResetError("connection lost")

    def write_eof(self) -> None:
        """Send close_notify and keep reading (TLS 1.3 half-close)."""
        if self._sent_close:
            return
        self._sent_close = True
        with contextlib.suppress(SSL.Error):
            self.tls.shutdown()
        self._flush()
        if self._peer_eof and self._raw is not None:
            self._raw.close()

    def close(self) -> None:
        """Send close_notify (if the handshake finished) and close once the raw buffer is flushed."""
        if self._handshake.done() and not self._handshake.cancelled() and self._handshake.exception() is None:
            self.write_eof()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    @property
    def raw(self) -> asyncio.Transport | None:
        return self._raw

    def is_closing(self) -> bool:
        return self._raw is None or self._raw.is_closing()

    # --- attached phase ----------------------------------------------------------------------

    def attach(self, app: asyncio.Protocol, extra: dict[str, Any]) -> TlsAppTransport:
        """Hand the verified connection to ``app``; buffered plaintext and EOF are delivered first."""
        if self._app is not None:
            raise RuntimeError("a TLS connection is attached once")
        transport = TlsAppTransport(self, extra)
        self._app_transport = transport
        self._app = app
        app.connection_made(transport)
        if self._plain:
            data = bytes(self._plain)
            self._plain.clear()
            app.data_received(data)
        if self._write_paused:
            app.pause_writing()
        if self._lost:
            self._app = None
            app.connection_lost(self._error if isinstance(self._error, Exception) else None)
            return transport
        if self._peer_eof:
            self._deliver_eof()
        else:
            self._resume_raw_reading()
            self._pump_plaintext()
        return transport

    def app_pause_reading(self) -> None:
        self._app_paused = True
        self._pause_raw_reading()

    def app_resume_reading(self) -> None:
        if not self._app_paused:
            return
        self._app_paused = False
        self._resume_raw_reading()
        # OpenSSL may hold decrypted records already; deliver them without waiting for the network.
        self._loop.call_soon(self._pump_plaintext)

    @property
    def app_reading(self) -> bool:
        return not self._app_paused


class TlsAppTransport(asyncio.Transport):
    """The application's view of a verified TLS connection (what a StreamWriter wraps)."""

    def __init__(self, proto: TlsProtocol, extra: dict[str, Any]) -> None:
        super().__init__()
        self._info = dict(extra)
        self._proto = proto

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._info:
            return self._info[name]
        if name == "ssl_object":
            return self._proto.tls
        raw = self._proto.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def is_closing(self) -> bool:
        return self._proto.is_closing()

    def wire_bytes(self) -> tuple[int, int]:
        """Raw TLS bytes ``(sent, received)`` on this connection so far, handshake included."""
        return self._proto.wire_sent, self._proto.wire_received

    def close(self) -> None:
        self._proto.close()

    def abort(self) -> None:
        self._proto.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._proto.write(data)

    def write_eof(self) -> None:
        self._proto.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self._proto.app_pause_reading()

    def resume_reading(self) -> None:
        self._proto.app_resume_reading()

    def is_reading(self) -> bool:
        return self._proto.app_reading

    def get_write_buffer_size(self) -> int:
        raw = self._proto.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._proto.raw
        return raw.get_write_buffer_limits() if raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._proto.raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand the attached connection to another application protocol (a tunnel's splice); what
        the previous one had buffered is its owner's to pass on."""
        if self._proto._app is None or not isinstance(protocol, asyncio.Protocol):
            raise RuntimeError("only an attached TLS connection can change to another asyncio.Protocol")
        self._proto._app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._proto._app or self._proto
