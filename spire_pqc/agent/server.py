"""The node agent: identity source + PQC provisioner + the Unix-socket gRPC server, with one lifecycle.

Lifecycle mirrors ``asyncio.Server`` (STYLE.md §6): ``await start()``, ``await close()`` (graceful:
tunnels stop accepting and their open connections get ``agent.shutdown_grace`` to finish, then open
streams end with UNAVAILABLE so clients reconnect elsewhere or to the restarted agent), or
``async with Agent(config):``. Signals and ``asyncio.run`` belong to ``spire_pqc.cli.agent``.

Start never waits for PQC credentials: the agent serves what it can at once (the standard Workload
API, credentials restored from ``agent.state_dir``), and tunnels refuse connections until their
identity has credentials. ``/ready`` (:attr:`Agent.ready`) says whether it serves PQC credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from spire_pqc._internal.malloc import limit_arenas
from spire_pqc._internal.wire import HYBRID_SERVICE, WORKLOAD_SERVICE
from spire_pqc.agent.caclient import CAClient
from spire_pqc.agent.cacontact import CAContact
from spire_pqc.agent.config import AgentConfig, DevSourceConfig, SpireSourceConfig
from spire_pqc.agent.connections import ConnectionRegistry, PeerCredServer
from spire_pqc.agent.federation import FederationFollower, load_remotes
from spire_pqc.agent.handler import build_services
from spire_pqc.agent.health import HealthServer
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.model import X509State
from spire_pqc.agent.peercred import PeerTracker, ProcReader
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.agent.sockets import bind_unix_socket
from spire_pqc.agent.sources.base import IdentitySource
from spire_pqc.agent.sources.delegated import DelegatedIdentitySource, OwnIdentity, grpc_ca_client
from spire_pqc.agent.sources.dev import DevIdentitySource
from spire_pqc.agent.state import StateDirectory
from spire_pqc.agent.status import status_document
from spire_pqc.agent.tunnel import InboundTunnel, OutboundTunnel, TunnelCollector
from spire_pqc.agent.tunnel_identity import AgentSvidSource
from spire_pqc.bundle import X509Bundle
from spire_pqc.crypto import timing
from spire_pqc.errors import ConfigError, SpirePqcError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)


def _load_federated(config: AgentConfig) -> dict[TrustDomain, bytes]:
    bundles: dict[TrustDomain, bytes] = {}
    problems = []
    for td, path in config.pqc_federated_bundles.items():
        try:
            bundles[td] = X509Bundle.from_pem(td, path.read_bytes()).to_der()
        except OSError as exc:
            problems.append(f"pqc.federated_bundles.{td}: {path}: cannot read: {exc.strerror or exc}")
        except SpirePqcError as exc:
            problems.append(f"pqc.federated_bundles.{td}: {exc}")
    if problems:
        raise ConfigError(problems)
    return bundles


class Agent:
    """One node agent process's worth of state."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        source: IdentitySource | None = None,
        ca_client: CAClient | None = None,
        proc_reader: ProcReader | None = None,
        metrics: Metrics | None = None,
        first_pqc_wait: float = 5.0,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.metrics.register(TunnelCollector(lambda: self.tunnels))
        self._source = source
        self._ca_client = ca_client
        self._tracker = PeerTracker(proc_reader)
        self._first_pqc_wait = first_pqc_wait
        self._server: PeerCredServer | None = None
        self._health: HealthServer | None = None
        self._own: OwnIdentity | None = None
        self._provisioner: PqcProvisioner | None = None
        self._federation: FederationFollower | None = None
        self._state: StateDirectory | None = None
        self._closing = False
        self._identities: dict[tuple[SpiffeId, frozenset[str]], AgentSvidSource] = {}
        self.tunnels: list[OutboundTunnel | InboundTunnel] = []

    # --- state -----------------------------------------------------------------------------------

    @property
    def source(self) -> IdentitySource:
        if self._source is None:
            raise SpirePqcError("agent not started")
        return self._source

    @property
    def federation(self) -> FederationFollower | None:
        """The follower of ``[federation]`` remote trust domains (None without any)."""
        return self._federation

    @property
    def provisioner(self) -> PqcProvisioner:
        if self._provisioner is None:
            raise SpirePqcError("agent not started")
        return self._provisioner

    @property
    def socket_path(self) -> Path:
        return self.config.socket_path

    @property
    def health(self) -> HealthServer | None:
        return self._health

    def render_metrics(self) -> str:
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        """The status document (``/status``; :mod:`spire_pqc.agent.status`)."""
        provisioner = self._provisioner
        return status_document(
            self.metrics,
            live=self.live,
            ready=self.ready,
            keys_initialized=provisioner is not None and provisioner.serving(),
            tunnel_modes=[tc.mode for tc in self.config.tunnels],
            ca=provisioner.contact.status() if provisioner is not None else None,
        )

    def render_status(self) -> str:
        return json.dumps(self.status(), indent=2) + "\n"

    @property
    def live(self) -> bool:
        return self._server is not None and not self._closing

    @property
    def ready(self) -> bool:
        """Serving, the identity source can answer, PQC credentials are served, and the PQC CA
        answered within ``pqc.ca_ready_window`` (``/ready``; :mod:`spire_pqc.agent.cacontact`).

        PQC credentials count as served when at least one identity has usable ones, or when there is
        nothing to serve yet (no tunnels configured, no workload has asked). So the agent is not ready
        while it has tunnels or callers and not one of their identities has PQC credentials (or SPIRE
        gives the tunnels no SVID), nor while the PQC CA is unreachable or refusing: credentials kept
        from before still serve workloads then, but none can be renewed or issued.
        """
        if not self.live or self._source is None or not self._source.ready or self._provisioner is None:
            return False
        provisioner = self._provisioner
        if not provisioner.contact.answering():
            return False
        return provisioner.serving() or (not provisioner.holding() and not self.config.tunnels)

    def _ca_address(self) -> str:
        """The PQC CA as an operator knows it: its configured address(es), or the dev source's own."""
        if self.config.ca is not None and self.config.ca.addresses:
            return ", ".join(self.config.ca.addresses)
        return "in-process (dev source)" if isinstance(self.config.source, DevSourceConfig) else "PQC CA"

    # --- lifecycle ---------------------------------------------------------------------------------

    def _build_source(self) -> IdentitySource:
        source_config = self.config.source
        if isinstance(source_config, DevSourceConfig):
            return DevIdentitySource(source_config, jwt_ttl=source_config.jwt_svid_ttl)
        own = self._own_identity(source_config)
        return DelegatedIdentitySource(source_config, own_id=lambda: own.spiffe_id)

    def _own_identity(self, source_config: SpireSourceConfig) -> OwnIdentity:
        """This agent's own SVID from SPIRE's Workload API (started once, shared)."""
        if self._own is None:
            self._own = OwnIdentity(str(source_config.workload_socket_path), source_config.agent_id)
            self._own.start()
        return self._own

    async def _build_ca_client(self, source: IdentitySource) -> CAClient:
        local = source.local_ca_client()
        if local is not None:
            return local
        source_config = self.config.source
        if self.config.ca is None or not isinstance(source_config, SpireSourceConfig):
            raise ConfigError("ca: no PQC CA client for this identity source")
        return grpc_ca_client(self.config.ca, self._own_identity(source_config))

    async def start(self) -> None:
        if self._server is not None:
            raise SpirePqcError("agent already started")
        federated = _load_federated(self.config)
        # Before the crypto threads allocate: arenas they would otherwise create are never made.
        log.info("%s", limit_arenas(self.config.malloc_arena_max))
        timing.add_observer(self.metrics.observe_pqc_operation)  # removed by close()
        if self.config.state_dir is not None:
            # First: it is locked, so a second agent on the same state (and, by default, the same
            # socket directory) stops here instead of taking the first one's socket away.
            state = StateDirectory(self.config.state_dir)
            loaded = await asyncio.to_thread(state.open)
            self._state = state
            log.info("state directory %s: %d kept PQC credential record(s)", state.path, loaded)
        try:
            await self._start_serving(federated)
        except BaseException:
            await self.close()  # e.g. a tunnel's port is taken: do not leave a half-started agent behind
            raise

    async def _start_serving(self, federated: dict[TrustDomain, bytes]) -> None:
        if self._source is None:
            self._source = self._build_source()
        await self._source.start()
        if self._ca_client is None:
            self._ca_client = await self._build_ca_client(self._source)
        self._provisioner = PqcProvisioner(
            self._ca_client,
            retry_initial=self.config.retry_initial,
            retry_max=self.config.retry_max,
            metrics=self.metrics,
            static_bundles=federated,
            state=self._state,
            revoked=self.config.revoked_intermediates,
            contact=CAContact(self._ca_address(), window=self.config.ca_ready_window),
        )
        if self.config.federation:
            source = self._source
            if not isinstance(source, DelegatedIdentitySource):
                raise ConfigError("federation: only the spire source has federated trust domains")
            state_dir = self.config.state_dir / "federation" if self.config.state_dir is not None else None
            self._federation = FederationFollower(
                load_remotes(self.config.federation),
                self._provisioner,
                source.x509_bundles,
                state_dir=state_dir,
            )
            self._federation.start()
        self._provisioner.start_bundle_refresh(self.config.bundle_refresh_interval)
        registry = ConnectionRegistry(self._tracker, self.config.limits, self.metrics)
        source = self._source
        serving = lambda: self.live and source.ready  # noqa: E731
        health = {"": serving, WORKLOAD_SERVICE: serving, HYBRID_SERVICE: lambda: self.ready}
        services = build_services(
            source,
            self._provisioner,
            registry,
            self.metrics,
            first_pqc_wait=self._first_pqc_wait,
            ca=self._ca_client,
            health=health,
        )
        server = PeerCredServer(services, registry)
        self.metrics.connections.set_function(lambda: server.connections)
        path = self.config.socket_path
        # Checked directory, final mode at bind() time, no symlink followed (agent.sockets).
        sock = bind_unix_socket(path, self.config.socket_mode, key="agent.socket_path")
        await server.serve(sock)  # its own accept loop: the per-uid cap is applied right after accept(2)
        self._server = server
        await self._start_tunnels()
        if self.config.health_address is not None:
            host, port = self.config.health_address
            refused = self.metrics.connections_closed.labels(reason="health_per_uid_cap")
            self._health = HealthServer(
                host, port, live=lambda: self.live, ready=lambda: self.ready, metrics=self.render_metrics,
                status=self.render_status, on_refused=refused.inc,
            )  # fmt: skip
            await self._health.start()
        log.info(
            "agent serving the Workload API and the hybrid extension on unix://%s (mode %s, source %s)",
            path,
            oct(self.config.socket_mode),
            self._source.name,
        )

    def tunnel_identity(
        self, spiffe_id: SpiffeId, selectors: frozenset[str] = frozenset()
    ) -> AgentSvidSource:
        """The hybrid SVID (and bundles) of ``spiffe_id`` from this agent's source, shared by its tunnels.

        Dev source: the entry with that SPIFFE ID. SPIRE source: the SVID of that ID among those SPIRE
        issues to ``selectors`` (Delegated Identity ``SubscribeToX509SVIDs{selectors}``).
        """
        key = (spiffe_id, selectors)
        identity = self._identities.get(key)
        if identity is None:
            watch = functools.partial(_watch_service, self.source, selectors=sorted(selectors))
            identity = AgentSvidSource(spiffe_id, watch, self.provisioner)
            identity.start()
            self._identities[key] = identity
        return identity

    async def _start_tunnels(self) -> None:
        # No waiting for credentials: a tunnel refuses connections (counted, logged once) until its
        # identity has them, while everything else this agent serves goes on.
        for tc in self.config.tunnels:
            identity = self.tunnel_identity(tc.spiffe_id, tc.selectors)
            tunnel: OutboundTunnel | InboundTunnel
            if tc.direction == "outbound":
                assert tc.remote is not None
                tunnel = OutboundTunnel(
                    tc.name, listen=tc.listen, remote=tc.remote, peer_ids=tc.peer_ids, source=identity,
                    mode=tc.mode,
                    allow_non_loopback=tc.allow_non_loopback, local_users=tc.local_users, metrics=self.metrics,
                )  # fmt: skip
            else:
                assert tc.target is not None and isinstance(tc.listen, tuple)  # config: inbound is TCP
                tunnel = InboundTunnel(
                    tc.name, listen=tc.listen, target=tc.target, source=identity,
                    allowed_ids=tc.allowed_ids,
                    allowed_trust_domain=tc.allowed_trust_domain, mode=tc.mode, metrics=self.metrics,
                )  # fmt: skip
            await tunnel.start()
            self.tunnels.append(tunnel)

    async def close(self) -> None:
        """Graceful stop: drain the tunnels, end open streams with UNAVAILABLE, stop the server.

        The keys in memory are forgotten; those in the state directory stay for the next start.
        """
        if self._closing:
            return
        self._closing = True
        timing.remove_observer(self.metrics.observe_pqc_operation)
        grace = self.config.shutdown_grace.total_seconds()
        # Tunnels first, all at once, while their identities and the Workload API still serve.
        await asyncio.gather(*(tunnel.drain(grace) for tunnel in self.tunnels))
        for identity in self._identities.values():
            await identity.close()
        if self._source is not None:
            await self._source.close()  # wakes every watcher; their streams end with UNAVAILABLE
        if self._federation is not None:
            await self._federation.close()
        if self._provisioner is not None:
            await self._provisioner.close()
        if self._own is not None:
            await self._own.close()
        if self._server is not None:
            # Give handlers a moment to send their final status before grpclib cancels the rest.
            deadline = asyncio.get_running_loop().time() + grace
            while self.metrics.open_stream_count() > 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), grace)
            self._server.close_connections()
        with contextlib.suppress(FileNotFoundError):
            if self._server is not None:  # never the socket of another agent that refused us
                self.config.socket_path.unlink()
        if self._health is not None:
            await self._health.close()
        if self._state is not None:
            self._state.close()
        log.info("agent stopped")

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _watch_service(
    source: IdentitySource, spiffe_id: SpiffeId, *, selectors: list[str]
) -> AsyncIterator[X509State]:
    return source.watch_service(spiffe_id, selectors)
