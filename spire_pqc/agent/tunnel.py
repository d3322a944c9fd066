"""Tunnels: the post-quantum channel for processes that cannot change their code (docs/architecture.md).

An :class:`OutboundTunnel` listens for plaintext on loopback TCP or on a Unix socket and carries
each connection over a hybrid (or ``spiffe`` / ``pq-tls``) channel to a remote agent whose SPIFFE ID
must be one of the expected ones. Whoever connects to it speaks with the tunnel's SPIFFE ID, so it
admits only the local users it names (:class:`~spire_pqc.agent.config.LocalUsers`), as the kernel
reports them (:mod:`spire_pqc.agent.localpeer`); everyone else is closed before anything is sent.
An :class:`InboundTunnel` listens for channel connections, admits the allowed peers only, and
forwards each to a local plaintext address. Both present the hybrid SVID of a local
service (an :class:`~spire_pqc.source.HybridSource`, asked again for every new connection, so a
rotation takes effect on new connections while open ones keep running).

Bytes are carried both ways by splicing the two transports (:func:`splice`: what one side reads is
written to the other at once, no stream buffer or task in between) with back-pressure (a side whose
write buffer is above its high-water mark stops the other side's reading), half-close is passed on
(EOF on one side becomes ``write_eof`` on the other: a TLS close_notify, RFC 8446 §6.1, or a TCP FIN),
and the connection is closed once both directions ended. Counters (:class:`TunnelStats`) feed the
agent's ``/metrics``; every refusal is logged with the peer and the reason.

A tunnel starts listening whether or not its identity has credentials yet: until they exist (the
PQC CA unreachable or refusing), each connection is refused at once, counted as ``unavailable`` and
logged once per outage, and the tunnel carries traffic as soon as they arrive.

Shutdown (:meth:`~OutboundTunnel.drain`): stop accepting, let open connections finish within a grace
period, then cut the rest with a reset, never a clean end of stream, so that neither end mistakes a
cut transfer for a complete one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc.agent.config import LocalUsers
from spire_pqc.agent.localpeer import local_peer
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.outage import Outage
from spire_pqc.agent.sockets import bind_unix_socket, listen_error
from spire_pqc.channel import (
    Authorizer,
    Mode,
    SecureServer,
    authorize_member_of,
    authorize_one_of,
    open_connection,
    start_server,
)
from spire_pqc.errors import ConfigError, SpirePqcError, UnavailableError
from spire_pqc.source import HybridSource
from spire_pqc.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 10.0


@dataclass
class TunnelStats:
    """Counters of one tunnel (monotonic except ``open``)."""

    accepted: int = 0  # connections carried
    refused: int = 0  # refused for the peer's credentials or authorization
    denied: int = 0  # outbound: a local user the tunnel does not admit
    failed: int = 0  # network failures (remote or target unreachable, resets)
    unavailable: int = 0  # refused because this agent has no credentials for the tunnel's identity yet
    cut: int = 0  # still open at shutdown when the grace period ended
    open: int = 0
    bytes_out: int = 0  # towards the remote side (over the channel)
    bytes_in: int = 0  # from the remote side


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class _End(asyncio.Protocol):
    """One side of a spliced connection: what it reads is written straight to the other side.

    Back-pressure: when this side's transport buffers more than its high-water mark, the other side
    stops reading until this one is below the low-water mark again. EOF on this side becomes
    ``write_eof`` on the other (half-close); this side stays open to write the other direction.
    """

    def __init__(self, link: _Link, transport: asyncio.Transport) -> None:
        self.link = link
        self.transport = transport
        self.peer: _End = self
        self.copied = 0  # bytes read on this side and written to the other
        self.ended = False  # this side's reading direction ended (EOF passed on)
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.copied += len(data)
        try:
            self.peer.transport.write(data)
        except (OSError, SpirePqcError) as exc:  # a TLS side already closed or failed
            self.link.fail(exc)

    def eof_received(self) -> bool:
        self.end()
        return True  # keep writing the other direction; the link closes both once both ended

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        peer = self.peer.transport
        if not peer.is_closing() and peer.can_write_eof():
            peer.write_eof()
        self.link.progress()

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if exc is not None:
            self.link.fail(exc)
            return
        self.end()  # a clean close ends this side's direction …
        if not self.peer.ended:  # … and the other direction has nowhere to go
            self.link.fail(ConnectionResetError("connection closed while the other direction was open"))


class _Link:
    """Two transports spliced at the protocol level: no stream buffers, no task per direction.

    Each side's protocol is replaced by an :class:`_End`; what its stream had read already (before
    the splice began) is passed on first. ``finished`` resolves once both directions ended (EOF
    passed on), or fails with the first error.
    """

    def __init__(self, a: asyncio.StreamWriter, b: asyncio.StreamWriter) -> None:
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.a = _End(self, _transport(a))
        self.b = _End(self, _transport(b))
        self.a.peer, self.b.peer = self.b, self.a

    def start(self, a: asyncio.StreamReader, b: asyncio.StreamReader) -> None:
        ends = ((self.a, a), (self.b, b))
        for end, _ in ends:
            if end.transport.is_closing():  # closed before the splice: its stream's protocol sees the rest
                end.closed.set_result(None)
            else:
                end.transport.set_protocol(end)
        taken = [(end, *_take_buffered(reader)) for end, reader in ends]
        for end, buffered, error, eof in taken:
            if buffered:
                end.data_received(buffered)
            if error is not None:
                self.fail(error)
            elif eof:
                end.end()
        for end, _ in ends:
            if end.closed.done():
                end.connection_lost(None)
                continue
            _, high = end.transport.get_write_buffer_limits()
            if end.transport.get_write_buffer_size() > high:
                end.pause_writing()
            end.transport.resume_reading()  # its stream may have paused it (a full buffer)

    def progress(self) -> None:
        if self.a.ended and self.b.ended and not self.finished.done():
            self.finished.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.finished.done():
            self.finished.set_exception(error)

    def abort(self) -> None:
        for end in (self.a, self.b):
            end.transport.abort()

    async def close(self) -> None:
        """Close both sides (a TLS side sends close_notify first) and wait until both are closed."""
        for end in (self.a, self.b):
            with contextlib.suppress(OSError, SpirePqcError):
                end.transport.close()
        try:
            await asyncio.gather(self.a.closed, self.b.closed)
        except asyncio.CancelledError:
            self.abort()  # cut while flushing: a reset, not a clean end
            raise


def _transport(writer: asyncio.StreamWriter) -> asyncio.Transport:
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    return transport


def _take_buffered(reader: asyncio.StreamReader) -> tuple[bytes, BaseException | None, bool]:
    """What a stream had read before its transport was handed to the splice: (data, error, EOF).

    asyncio has no public accessor for a StreamReader's buffer; ``_buffer`` is the same in CPython
    3.11-3.13, and the tunnel tests (which send before the remote side is connected) fail if it changes.
    """
    buffer: bytearray = getattr(reader, "_buffer")  # noqa: B009 - private, see above
    data = bytes(buffer)
    buffer.clear()
    return data, reader.exception(), reader.at_eof()


async def splice(
    local: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    remote: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    stats: TunnelStats,
) -> None:
    """Carry local → remote and remote → local until both ended; any error aborts both sides.

    The streams' transports are spliced directly (:class:`_Link`): each chunk a transport reads is
    written to the other at once, without a copy into a stream buffer or a task per direction."""
    link = _Link(local[1], remote[1])
    try:
        link.start(local[0], remote[0])
        await link.finished
    except asyncio.CancelledError:
        # Cut (shutdown after the grace period): a reset on both sides, never a clean end of stream
        # (TLS close_notify or TCP FIN) that a peer would take for the end of a complete transfer.
        link.abort()
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of either side ends the connection, logged once
        link.abort()
        stats.failed += 1
        log.info("tunnel connection ended with an error: %s", exc)
    finally:
        stats.bytes_out += link.a.copied
        stats.bytes_in += link.b.copied
        await link.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, SpirePqcError, asyncio.IncompleteReadError):
        await writer.wait_closed()


class _Tunnel:
    """Shared lifecycle: connection tasks are tracked so ``drain()`` and ``close()`` can end them."""

    def __init__(self, name: str, source: HybridSource, metrics: Metrics | None) -> None:
        self.name = name
        self.stats = TunnelStats()
        self._metrics = metrics
        self._refusals = LogLimiter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._source = source
        self._no_credentials = Outage(log, f"tunnel {name}: refusing connections, no credentials yet")

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def ready(self) -> bool:
        """Whether the tunnel's identity has credentials (else it refuses connections)."""
        try:
            self._source.get_hybrid_svid()
        except UnavailableError:
            return False
        return True

    def _observe(self, mode: Mode, error: BaseException | None, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.observe_channel(mode.value, error, seconds)

    def _refused(self, peer: str, exc: BaseException, what: str) -> None:
        """Log a refused or failed channel with the tunnel and the peer (one line per kind and interval:
        a peer can cause them at will). A TLS alert the peer sent is in ``exc``'s message."""
        self._refusals.log(
            log, logging.WARNING, type(exc).__name__, "tunnel %s: %s %s: %s", self.name, what, peer, exc,
        )  # fmt: skip

    def _unavailable(self, exc: UnavailableError) -> None:
        self.stats.unavailable += 1
        self._no_credentials.hit(exc)

    async def _finish_connections(self, grace: float) -> None:
        """Let the tracked connections finish for up to ``grace`` seconds, then cut the rest."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks and grace > 0:
            _, still_open = await asyncio.wait(tasks, timeout=grace)
            tasks = list(still_open)
        if tasks:
            self.stats.cut += len(tasks)
            log.warning(
                "tunnel %s: cutting %d connection(s) still open after the grace period", self.name, len(tasks)
            )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class OutboundTunnel(_Tunnel):
    """Local plaintext listener → channel to ``remote``, whose SPIFFE ID must be one of ``peer_ids``.

    ``listen`` is a loopback ``(host, port)`` or the path of a Unix socket; ``local_users`` (required)
    are the local users allowed to connect to it.
    """

    def __init__(
        self,
        name: str,
        *,
        listen: tuple[str, int] | Path,
        remote: tuple[str, int],
        peer_ids: Sequence[SpiffeId | str],
        source: HybridSource,
        local_users: LocalUsers | None,
        mode: Mode | str = Mode.HYBRID,
        allow_non_loopback: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(name, source, metrics)
        if not peer_ids:
            raise ConfigError(f"tunnel {name}: peer_ids must name at least one SPIFFE ID")
        if local_users is None:
            raise ConfigError(
                f"tunnel {name}: name the local users allowed to use it (allowed_uids / allowed_gids)"
            )
        if isinstance(listen, tuple) and not allow_non_loopback and not is_loopback(listen[0]):
            # Anyone who can reach the plaintext side speaks with this node's identity: keep it local.
            raise ConfigError(f"tunnel {name}: listen address {listen[0]!r} is not loopback")
        if allow_non_loopback and not local_users.anyone:
            raise ConfigError(f"tunnel {name}: connections from other hosts have no local user to admit")
        self.listen = listen
        self.local_users = local_users
        self._denials = LogLimiter()
        self.remote = remote
        self.mode = Mode.parse(mode)
        self._authorizer: Authorizer = authorize_one_of(*peer_ids)
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._port is None:
            raise SpirePqcError(f"tunnel {self.name} not started")
        return self._port

    async def start(self) -> None:
        if isinstance(self.listen, Path):
            # Mode 0666: the access list below, not the file mode, decides who may use the tunnel.
            sock = bind_unix_socket(self.listen, 0o666, key=f"tunnel {self.name}: listen")
            self._server = await asyncio.start_unix_server(self._handle, sock=sock)
            self._port = 0
            where = f"unix:{self.listen}"
        else:
            try:
                self._server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1])
            except OSError as exc:
                raise listen_error(f'tunnel.outbound "{self.name}".listen', *self.listen, exc) from None
            self._port = int(self._server.sockets[0].getsockname()[1])
            where = f"{self.listen[0]}:{self._port}"
        if self.local_users.anyone:
            log.warning("tunnel %s: any local user may use it and speak as its SPIFFE ID (allowed_uids = \"*\")",
                        self.name)  # fmt: skip
        log.info(
            "tunnel %s: %s → %s %s:%d, for %s",
            self.name, where, self.mode.value, self.remote[0], self.remote[1], self.local_users.describe(),
        )  # fmt: skip

    def _admits(self, writer: asyncio.StreamWriter) -> bool:
        """Whether the local user on the other end may use this tunnel (refused if it cannot be told)."""
        if self.local_users.anyone:
            return True
        sock = writer.get_extra_info("socket")
        try:
            uid, groups = local_peer(sock)
        except OSError as exc:
            kind, who, allowed = "unidentified", f"an unidentified peer ({exc})", False
        else:
            kind = who = f"uid {uid}"
            allowed = self.local_users.allows(uid, groups)
        if not allowed:
            self.stats.denied += 1
            self._denials.log(
                log, logging.WARNING, kind,
                "tunnel %s: refused %s: not among the allowed local users (%s)",
                self.name, who, self.local_users.describe(),
            )  # fmt: skip
        return allowed

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        if not self._admits(writer):
            writer.transport.abort()
            return
        client = writer.get_extra_info("peername")
        host, port = self.remote
        try:
            self._source.get_hybrid_svid()  # refuse at once, before dialling, while we have no credentials
        except UnavailableError as exc:
            self._unavailable(exc)
            writer.transport.abort()  # a reset: the client must not read this as an empty answer
            return
        self._no_credentials.clear()
        started = asyncio.get_running_loop().time()
        try:
            remote = await asyncio.wait_for(
                open_connection(
                    host, port, source=self._source, authorizer=self._authorizer, mode=self.mode,
                ),
                _CONNECT_TIMEOUT,
            )  # fmt: skip
        except UnavailableError as exc:  # our own identity went away meanwhile: not the remote's fault
            self._unavailable(exc)
            writer.transport.abort()
            return
        except SpirePqcError as exc:
            self.stats.refused += 1
            self._observe(self.mode, exc, 0.0)
            self._refused(f"{host}:{port} (for local client {client})", exc, "refused remote")
            await _close(writer)
            return
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.stats.failed += 1
            self._observe(self.mode, exc, 0.0)
            self._refused(f"{host}:{port} (for local client {client})", exc, "cannot reach remote")
            await _close(writer)
            return
        self._observe(self.mode, None, asyncio.get_running_loop().time() - started)
        self.stats.accepted += 1
        self.stats.open += 1
        try:
            await splice((reader, writer), remote, self.stats)
        except asyncio.CancelledError:
            # The tunnel is closing. This task belongs to asyncio.start_server, whose callback calls
            # task.exception() on it and would log a spurious traceback for a cancelled task.
            log.debug("tunnel %s: connection from %s closed by shutdown", self.name, client)
        finally:
            self.stats.open -= 1

    async def drain(self, grace: float) -> None:
        """Stop accepting; open connections get ``grace`` seconds to finish, the rest are cut."""
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)  # connections accepted just now start their task (and are tracked)
        await self._finish_connections(grace)
        if self._server is not None:
            await self._server.wait_closed()
        if isinstance(self.listen, Path):
            with contextlib.suppress(FileNotFoundError):
                self.listen.unlink()

    async def close(self) -> None:
        """Stop at once: open connections are cut."""
        await self.drain(0.0)


class _RefusalLog(deque[SpirePqcError]):
    """The channel server's refusal log, counted into the tunnel's stats (the deque itself is bounded)."""

    def __init__(self, tunnel: InboundTunnel) -> None:
        super().__init__(maxlen=64)
        self._tunnel = tunnel

    def append(self, item: SpirePqcError) -> None:
        # Refusals during setup are counted by InboundTunnel._on_setup (once per connection); here only
        # the connections refused before setup because our own credentials are missing.
        if isinstance(item, UnavailableError):
            self._tunnel._unavailable(item)
        super().append(item)


class InboundTunnel(_Tunnel):
    """Channel listener admitting ``allowed_ids`` (or members of ``allowed_trust_domain``) → ``target``."""

    def __init__(
        self,
        name: str,
        *,
        listen: tuple[str, int],
        target: tuple[str, int],
        source: HybridSource,
        allowed_ids: Sequence[SpiffeId | str] = (),
        allowed_trust_domain: TrustDomain | str | None = None,
        mode: Mode | str = Mode.HYBRID,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(name, source, metrics)
        authorizer: Authorizer
        if allowed_ids and allowed_trust_domain is None:
            authorizer = authorize_one_of(*allowed_ids)
        elif allowed_trust_domain is not None and not allowed_ids:
            authorizer = authorize_member_of(allowed_trust_domain)
        else:
            raise ConfigError(f"tunnel {name}: give exactly one of allowed_ids, allowed_trust_domain")
        self.listen = listen
        self.target = target
        self.mode = Mode.parse(mode)
        self._authorizer = authorizer
        self._server: SecureServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise SpirePqcError(f"tunnel {self.name} not started")
        return self._server.port

    async def start(self) -> None:
        try:
            self._server = await start_server(
                self._handle, self.listen[0], self.listen[1], source=self._source, authorizer=self._authorizer,
                mode=self.mode,
            )  # fmt: skip
        except OSError as exc:
            raise listen_error(f'tunnel.inbound "{self.name}".listen', *self.listen, exc) from None
        self._server.failures = _RefusalLog(self)
        self._server.on_setup = self._on_setup  # counts, times and logs each connection's setup once
        log.info(
            "tunnel %s: %s %s:%d → %s:%d",
            self.name, self.mode.value, self.listen[0], self.port, self.target[0], self.target[1],
        )  # fmt: skip

    def _on_setup(self, peer: str, error: BaseException | None, seconds: float) -> None:
        self._observe(self.mode, error, seconds)
        if error is None:
            return
        if isinstance(error, UnavailableError):
            self._unavailable(error)
        elif isinstance(error, SpirePqcError):
            self.stats.refused += 1
            self._refused(peer, error, f"refused {self.mode.value} connection from")
        else:
            self.stats.failed += 1
            self._refused(peer, error, "connection failed during setup from")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self._no_credentials.clear()
        peer = writer.get_extra_info("peer_id")
        try:
            local = await asyncio.wait_for(asyncio.open_connection(*self.target), _CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            self.stats.failed += 1
            log.warning("tunnel %s: target %s:%d unreachable for %s: %s", self.name, *self.target, peer, exc)
            await _close(writer)
            return
        self.stats.accepted += 1
        self.stats.open += 1
        try:
            await splice(local, (reader, writer), self.stats)
        finally:
            self.stats.open -= 1

    async def drain(self, grace: float) -> None:
        """Stop accepting; connections (also those still in their handshake) get ``grace`` seconds to
        finish, the rest are cut."""
        if self._server is None:
            return
        self.stats.cut += await self._server.drain(grace)
        await self._server.wait_closed()

    async def close(self) -> None:
        """Stop at once: open connections are cut."""
        await self.drain(0.0)


class TunnelCollector(Collector):
    """Tunnel counters as Prometheus families, read from each tunnel's :class:`TunnelStats` per scrape."""

    def __init__(self, tunnels: Callable[[], Sequence[OutboundTunnel | InboundTunnel]]) -> None:
        self._tunnels = tunnels

    def collect(self) -> Iterator[Metric]:
        labels = ["tunnel", "kind"]
        connections = CounterMetricFamily(
            "spire_pqc_agent_tunnel_connections", "Tunnel connections by result.", labels=[*labels, "result"]
        )
        open_now = GaugeMetricFamily("spire_pqc_agent_tunnel_open_connections", "Open tunnel connections.",
                                     labels=labels)  # fmt: skip
        carried = CounterMetricFamily(
            "spire_pqc_agent_tunnel_bytes",
            "Bytes carried by tunnels, by direction (out = towards the remote).",
            labels=[*labels, "direction"],
        )
        for tunnel in self._tunnels():
            base = [tunnel.name, "outbound" if isinstance(tunnel, OutboundTunnel) else "inbound"]
            s = tunnel.stats
            results = (
                ("accepted", s.accepted),
                ("refused", s.refused),
                ("failed", s.failed),
                ("unavailable", s.unavailable),
                ("cut", s.cut),
                ("denied", s.denied),
            )
            for result, value in results:
                connections.add_metric([*base, result], value)
            open_now.add_metric(base, s.open)
            carried.add_metric([*base, "out"], s.bytes_out)
            carried.add_metric([*base, "in"], s.bytes_in)
        yield from (connections, open_now, carried)
