"""A local bridge that lets a plaintext client (grpcio) reach a SPIFFE mTLS server over hybrid TLS.

Why: grpcio's TLS client always checks the server's DNS name, and a SPIRE server SVID carries only
a SPIFFE URI SAN, so a stock grpcio channel cannot talk to the PQC CA endpoint. It also offers no
way to require the X25519MLKEM768 group or to verify the peer per SPIFFE rules. The bridge listens
on a private Unix socket (directory 0700); each accepted connection is carried over its own
pyOpenSSL TLS 1.3 connection that

* offers X25519MLKEM768 only (no classical key exchange is ever negotiated),
* presents the caller's X509-SVID (mutual TLS),
* verifies the server chain against the bundle of the server's own trust domain
  (:func:`spire_pqc.svid.verify_classical_svid`) and its SPIFFE ID with a required matcher,

before a single byte is forwarded. ``grpc.insecure_channel(bridge.target)`` then works unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from spire_pqc.bundle import BundleSource
from spire_pqc.channel.context import HYBRID_GROUP, classical_context, classify_handshake_error
from spire_pqc.errors import (
    AuthorizationError,
    HandshakeError,
    NoHybridGroupError,
    SpirePqcError,
    VerificationError,
)
from spire_pqc.spiffeid import Matcher, SpiffeId
from spire_pqc.svid import X509Svid, verify_classical_svid

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_BUFFER_LIMIT = 1 << 20


@dataclass(frozen=True)
class VerifiedConnection:
    """A TLS connection whose server passed SPIFFE verification (socket is non-blocking)."""

    tls: SSL.Connection
    sock: socket.socket
    peer: SpiffeId


def hybrid_client_context(identity: X509Svid, *, alpn: tuple[bytes, ...] = (b"h2",)) -> SSL.Context:
    """The channel's own context (:func:`~spire_pqc.channel.context.classical_context`: TLS 1.3,
    X25519MLKEM768 only, no tickets, exactly the SVID chain) offering ``alpn`` (gRPC's ``h2``); the
    server is verified by the caller after the handshake."""
    ctx = classical_context(identity.chain, identity.key)
    if alpn:
        ctx.set_alpn_protos(list(alpn))
    return ctx


def connect_verified(
    address: tuple[str, int],
    identity: X509Svid,
    bundles: BundleSource,
    server: Matcher,
    *,
    timeout: float = 10.0,
) -> VerifiedConnection:
    """Open a hybrid mTLS connection and verify the server; raise a typed error on any failure."""
    context = hybrid_client_context(identity)
    raw = socket.create_connection(address, timeout=timeout)
    conn = SSL.Connection(context, raw)
    conn.set_connect_state()
    where = f"{address[0]}:{address[1]}"
    try:
        _handshake(conn, raw, timeout)
    except SSL.Error as exc:
        raw.close()
        error = classify_handshake_error(exc, server_side=False)
        raise type(error)(f"{where}: {error}") from exc
    except OSError as exc:
        raw.close()
        raise HandshakeError(f"{where}: TLS handshake failed: {exc}") from exc
    group = conn.get_group_name()
    if group != HYBRID_GROUP:
        raw.close()
        raise NoHybridGroupError(f"{where}: negotiated key exchange {group}, not {HYBRID_GROUP}")
    chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    try:
        peer = verify_classical_svid(chain, bundles)
        server(peer)
    except (VerificationError, AuthorizationError):
        raw.close()
        raise
    return VerifiedConnection(conn, raw, peer)


def _handshake(conn: SSL.Connection, raw: socket.socket, timeout: float) -> None:
    """Drive the handshake on a non-blocking socket with an overall deadline."""
    import time

    raw.setblocking(False)
    deadline = time.monotonic() + timeout
    while True:
        wait: tuple[list[socket.socket], list[socket.socket]]
        try:
            conn.do_handshake()
            return
        except SSL.WantReadError:
            wait = ([raw], [])
        except SSL.WantWriteError:
            wait = ([], [raw])
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not any(select.select(*wait, [], remaining)[:2]):
            raise TimeoutError(f"TLS handshake did not complete within {timeout:.0f}s")


class TLSBridge:
    """Plaintext Unix socket → verified hybrid mTLS to ``address``. Use ``target`` with grpcio."""

    def __init__(
        self,
        address: tuple[str, int],
        identity: Callable[[], X509Svid],
        bundles: Callable[[], BundleSource],
        server: Matcher,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._address = address
        self._identity = identity
        self._bundles = bundles
        self._server = server
        self._timeout = timeout
        self._dir = Path(tempfile.mkdtemp(prefix="spq-bridge-"))
        os.chmod(self._dir, 0o700)
        self.path = self._dir / "b.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(16)
        self._closed = threading.Event()
        self.failures = 0
        # Why the last connection to ``address`` failed (None after a success): what a client of the
        # bridge reports instead of grpcio's words about the bridge's own socket.
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._accept_loop, name="spire-pqc-bridge", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"unix:{self.path}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(local,), name="spire-pqc-bridge-conn", daemon=True
            ).start()

    def _serve(self, local: socket.socket) -> None:
        try:
            verified = connect_verified(
                self._address, self._identity(), self._bundles(), self._server, timeout=self._timeout
            )
        except (SpirePqcError, OSError, SSL.Error, ValueError) as exc:
            self.failures += 1
            cause = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            self.last_error = f"{self._address[0]}:{self._address[1]}: {cause}"
            log.warning("bridge to %s:%d refused: %s", self._address[0], self._address[1], exc)
            local.close()
            return
        self.last_error = None
        log.debug("bridge connected to %s (X25519MLKEM768)", verified.peer)
        try:
            _pump(local, verified.tls, verified.sock, self._closed)
        finally:
            with contextlib.suppress(SSL.Error, OSError):
                verified.tls.shutdown()
            verified.sock.close()
            local.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _pump(
    local: socket.socket, conn: SSL.Connection, tls_sock: socket.socket, closed: threading.Event
) -> None:
    """Copy bytes both ways until either side closes (non-blocking, one thread, back-pressured)."""
    tls_sock.setblocking(False)
    local.setblocking(False)
    to_tls = b""
    to_local = bytearray()
    local_open = tls_open = True
    while (local_open or to_tls) and (tls_open or to_local) and not closed.is_set():
        readers = []
        if local_open and not to_tls:
            readers.append(local)
        if tls_open and len(to_local) < _BUFFER_LIMIT:
            readers.append(tls_sock)
        writers = ([local] if to_local else []) + ([tls_sock] if to_tls else [])
        if tls_open and conn.pending():
            readable: list[socket.socket] = [tls_sock]
            writable: list[socket.socket] = []
        else:
            readable, writable, _ = select.select(readers, writers, [], 1.0)
        if tls_sock in readable:
            try:
                data = conn.recv(_CHUNK)
                to_local += data
            except (SSL.WantReadError, SSL.WantWriteError):
                pass
            except (SSL.ZeroReturnError, SSL.SysCallError):
                tls_open = False
        if local in readable:
            try:
                chunk = local.recv(_CHUNK)
            except BlockingIOError:
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                local_open = False
                with contextlib.suppress(SSL.Error):
                    conn.shutdown()
            elif chunk:
                to_tls = chunk
        if to_tls:  # non-blocking: WantWrite just waits for the next select
            try:
                sent = conn.send(to_tls)
                to_tls = to_tls[sent:]
            except (SSL.WantWriteError, SSL.WantReadError):
                pass
            except SSL.Error:
                return
        if to_local and local in writable:
            try:
                sent = local.send(to_local)
                del to_local[:sent]
            except BlockingIOError:
                pass
            except OSError:
                return
