"""SPIRE's Delegated Identity API as an identity source (the production source).

The SPIRE agent attests the caller itself: for each open Workload API stream this source subscribes
with ``SubscribeToX509SVIDs{pid}`` on the SPIRE agent's admin socket
(``spire.api.agent.delegatedidentity.v1.DelegatedIdentity``, ``spiffe/spire:doc/spire_agent.md``,
"Delegated Identity API"): SPIRE attests the *caller* of its Workload API, so a relay could only get
its own SVIDs there. SPIRE requires this agent's own SPIFFE ID to be listed
in ``authorized_delegates``. Bundles come from one shared ``SubscribeToX509Bundles`` stream.

JWT profile: ``FetchJWTSVIDs{audience, pid}`` per request (SPIRE attests the PID and signs), and one
shared ``SubscribeToJWTBundles`` stream (trust domain → JWKS) that FetchJWTBundles serves and
ValidateJWTSVID verifies against (:mod:`spire_pqc.agent.jwtsvid`).

SPIRE asks delegates to keep the PID from being recycled while the subscription is open; the
caller's connection to us is held open for the same time, and :mod:`spire_pqc.agent.peercred`
re-checks the PID before every answer.

:class:`OwnIdentity` follows this agent's own X509-SVID from the SPIRE agent's Workload API (with the
project's own Workload API client); it is the client certificate for the PQC CA endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal.backoff import Backoff
from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2 as di
from spire_pqc._proto.spire.api.agent.delegatedidentity.v1 import delegatedidentity_pb2_grpc as di_grpc
from spire_pqc._proto.spire.api.types import types_pb2
from spire_pqc.agent.caclient import FailoverCAClient, GrpcCAClient, TLSIdentity
from spire_pqc.agent.config import CAClientConfig, SpireSourceConfig
from spire_pqc.agent.jwtsvid import JwtSvid
from spire_pqc.agent.model import Caller, X509State
from spire_pqc.agent.notify import Broadcast
from spire_pqc.agent.peercred import LinuxProcReader
from spire_pqc.agent.sources.shared import SharedWatches
from spire_pqc.errors import AuthorizationError, SpiffeIdError, SpirePqcError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import X509Svid
from spire_pqc.workload.client import WorkloadClient

log = logging.getLogger(__name__)

# The admin socket is local: reconnect quickly after a SPIRE agent restart instead of grpc's default
# backoff (up to 120 s), during which every call would fail fast with the stale connect error.
_LOCAL_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _rpc_error(exc: grpc.aio.AioRpcError, what: str) -> SpirePqcError:
    code = exc.code()
    text = f"SPIRE agent {what}: {code.name}: {exc.details()}"
    if code is grpc.StatusCode.PERMISSION_DENIED:
        # Either the caller has no registration entry, or this agent is not an authorized delegate.
        return AuthorizationError(text)
    return UnavailableError(text)


def parse_svids(response: di.SubscribeToX509SVIDsResponse) -> tuple[X509Svid, ...]:
    """Delegated Identity SVIDs → domain SVIDs (skipping, with a warning, any that do not parse)."""
    svids = []
    for item in response.x509_svids:
        svid = item.x509_svid
        try:
            spiffe_id = SpiffeId.from_parts(svid.id.trust_domain, svid.id.path)
            svids.append(
                X509Svid.from_der(
                    spiffe_id, [bytes(c) for c in svid.cert_chain], bytes(item.x509_svid_key), svid.hint
                )
            )
        except (SpirePqcError, ValueError) as exc:
            log.warning("ignoring an X509-SVID from SPIRE that does not parse: %s", exc)
    return tuple(svids)


def parse_bundles(
    response: di.SubscribeToX509BundlesResponse | di.SubscribeToJWTBundlesResponse,
) -> dict[TrustDomain, bytes]:
    """X.509 (DER) or JWT (JWKS JSON) bundles by trust domain."""
    items = (
        response.ca_certificates
        if isinstance(response, di.SubscribeToX509BundlesResponse)
        else response.bundles
    )
    bundles = {}
    for key, der in items.items():
        try:
            bundles[TrustDomain.parse(key)] = bytes(der)  # SPIRE keys by trust domain ID or name
        except SpiffeIdError as exc:
            log.warning("ignoring a bundle from SPIRE with key %r: %s", key[:80], exc)
    return bundles


class DelegatedIdentitySource:
    """Per-caller subscriptions on the SPIRE agent's admin socket."""

    name = "spire"

    def __init__(
        self,
        config: SpireSourceConfig,
        *,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        own_id: Callable[[], SpiffeId | None] = lambda: None,
    ) -> None:
        self._config = config
        self._own_id = own_id  # this agent's own SPIFFE ID (for the refused-delegate message)
        self._channel: grpc.aio.Channel | None = None
        self._bundles: Broadcast[dict[TrustDomain, bytes]] = Broadcast()
        self._bundle_task: asyncio.Task[None] | None = None
        self._jwt_bundles: Broadcast[dict[TrustDomain, bytes]] = Broadcast()
        self._jwt_bundle_task: asyncio.Task[None] | None = None
        self._retry = (retry_initial, retry_max)
        self._closed = False
        # One subscription per calling process, shared by its open requests (sources/shared.py).
        self._processes: SharedWatches[tuple[int, int, int, int], X509State] = SharedWatches(
            lambda key: self._watch(di.SubscribeToX509SVIDsRequest(pid=key[0]), f"pid {key[0]}")
        )
        self._proc = LinuxProcReader()

    @property
    def ready(self) -> bool:
        return self._bundles.value is not None and not self._closed

    def _stub(self) -> di_grpc.DelegatedIdentityAsyncStub:
        if self._channel is None:
            raise UnavailableError("SPIRE delegated identity source not started")
        return di_grpc.DelegatedIdentityStub(self._channel)

    def _connect(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            f"unix://{self._config.admin_socket_path}", options=_LOCAL_CHANNEL_OPTIONS
        )

    async def _reconnect(self) -> None:
        """Replace the channel (a restarted SPIRE agent is a new socket)."""
        old, self._channel = self._channel, self._connect()
        if old is not None:
            await old.close(None)

    async def start(self) -> None:
        self._channel = self._connect()
        self._bundle_task = asyncio.create_task(
            self._follow_bundles(self._bundles, jwt=False), name="spire-pqc-spire-bundles"
        )
        self._jwt_bundle_task = asyncio.create_task(
            self._follow_bundles(self._jwt_bundles, jwt=True), name="spire-pqc-spire-jwt-bundles"
        )

    async def close(self) -> None:
        self._closed = True
        await self._processes.close()
        for task in (self._bundle_task, self._jwt_bundle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._bundles.close()
        self._jwt_bundles.close()
        if self._channel is not None:
            await self._channel.close(None)

    async def _follow_bundles(self, into: Broadcast[dict[TrustDomain, bytes]], *, jwt: bool) -> None:
        backoff = Backoff(*self._retry)
        what = "JWT bundles" if jwt else "bundles"
        while not self._closed:
            stub = self._stub()
            call: Any = (
                stub.SubscribeToJWTBundles(di.SubscribeToJWTBundlesRequest())
                if jwt
                else stub.SubscribeToX509Bundles(di.SubscribeToX509BundlesRequest())
            )
            try:
                async for response in call:
                    into.publish(parse_bundles(response))
                    backoff.reset()
                log.warning("SPIRE agent ended the %s stream; resubscribing", what)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
                    self._refused_delegate(exc, what)
                else:
                    log.warning("%s; retrying with backoff", _rpc_error(exc, what))
                # Only the X.509 follower replaces the shared channel, so a restart reconnects once.
                if exc.code() is grpc.StatusCode.UNAVAILABLE and not self._closed and not jwt:
                    await self._reconnect()
            finally:
                call.cancel()
            await asyncio.sleep(backoff.next())

    def _refused_delegate(self, exc: grpc.aio.AioRpcError, what: str) -> None:
        own = self._own_id() or self._config.agent_id
        who = (
            f"this agent's SPIFFE ID {own}"
            if own is not None
            else "this agent's SPIFFE ID (unknown yet: SPIRE's Workload API gave it no SVID)"
        )
        log.error(
            "%s: the SPIRE agent refuses this agent as a delegate: add %s to authorized_delegates in the "
            "SPIRE agent's configuration (beside admin_socket_path = %s), and give this agent a registration "
            "entry; retrying with backoff",
            _rpc_error(exc, what), who, self._config.admin_socket_path,
        )  # fmt: skip

    def _state(self, svids: tuple[X509Svid, ...], federates_with: set[TrustDomain]) -> X509State:
        all_bundles: Mapping[TrustDomain, bytes] = self._bundles.value or {}
        own = {s.spiffe_id.trust_domain for s in svids}
        return X509State(
            svids, {td: der for td, der in all_bundles.items() if td in own or td in federates_with}
        )

    async def fetch_jwt_svids(
        self, caller: Caller, audience: Sequence[str], spiffe_id: SpiffeId | None
    ) -> list[JwtSvid]:
        """JWT-SVIDs SPIRE issues to the caller's PID for ``audience`` (only ``spiffe_id``'s when given)."""
        request = di.FetchJWTSVIDsRequest(audience=list(audience), pid=caller.pid)
        try:
            response = await self._stub().FetchJWTSVIDs(request)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc, f"JWT-SVIDs for pid {caller.pid}") from exc
        svids = []
        for item in response.svids:
            try:
                sid = SpiffeId.from_parts(item.id.trust_domain, item.id.path)
            except SpiffeIdError as exc:
                log.warning("ignoring a JWT-SVID from SPIRE with an invalid SPIFFE ID: %s", exc)
                continue
            if spiffe_id is None or sid == spiffe_id:
                svids.append(JwtSvid(sid, item.token, item.hint))
        if not svids:
            raise AuthorizationError(
                "no identity issued" if spiffe_id is None else f"no identity {spiffe_id}"
            )
        return svids

    async def watch_jwt_bundles(self, caller: Caller) -> AsyncIterator[Mapping[TrustDomain, bytes]]:
        """SPIRE's JWT bundles (trust domain → JWKS), full state after every change."""
        if self._jwt_bundles.value is None:
            raise UnavailableError("waiting for the JWT bundles from the SPIRE agent")
        async for bundles in self._jwt_bundles.updates():
            yield bundles

    def x509_bundles(self) -> Mapping[TrustDomain, bytes]:
        """The latest classical X.509 bundles from SPIRE (its own and federated trust domains, DER)."""
        return self._bundles.value or {}

    def jwt_bundles(self) -> Mapping[TrustDomain, bytes]:
        value = self._jwt_bundles.value
        if value is None:
            raise UnavailableError("waiting for the JWT bundles from the SPIRE agent")
        return value

    def local_ca_client(self) -> None:
        """SPIRE's PQC CA is the plugin's endpoint (``ca.address``), never in-process."""
        return None

    def watch(self, caller: Caller) -> AsyncIterator[X509State]:
        """The caller's SVIDs, from the subscription its process already has open, else a new one.

        Keyed by the process (pid, start time, uid, gid): a recycled PID or a changed owner is
        another key. A process whose start time cannot be read gets a subscription of its own."""
        starttime = caller.starttime  # as attested and re-checked just before (peercred.py)
        if starttime is None:
            try:
                starttime = self._proc.stamp(caller.pid).starttime
            except (OSError, ValueError):
                return self._watch(di.SubscribeToX509SVIDsRequest(pid=caller.pid), f"pid {caller.pid}")
        return self._processes.watch((caller.pid, starttime, caller.uid, caller.gid))

    async def watch_service(self, spiffe_id: SpiffeId, selectors: Sequence[str]) -> AsyncIterator[X509State]:
        """The SVID of ``spiffe_id`` among those SPIRE issues to ``selectors`` ('type:value', e.g.
        'unix:uid:1000'): the agent itself acting for a local service (its tunnels), not a caller."""
        request = di.SubscribeToX509SVIDsRequest(
            selectors=[
                types_pb2.Selector(type=t, value=v) for t, _, v in (s.partition(":") for s in selectors)
            ]
        )
        async for state in self._watch(request, f"selectors {sorted(selectors)}"):
            mine = tuple(svid for svid in state.svids if svid.spiffe_id == spiffe_id)
            if not mine:
                raise AuthorizationError(
                    f"SPIRE issues no SVID of {spiffe_id} to selectors {sorted(selectors)}"
                )
            yield X509State(mine, state.bundles)

    async def _watch(self, request: di.SubscribeToX509SVIDsRequest, what: str) -> AsyncIterator[X509State]:
        if self._bundles.value is None:
            raise UnavailableError("waiting for the trust bundle from the SPIRE agent")
        call = self._stub().SubscribeToX509SVIDs(request)
        responses = call.__aiter__()
        pending: asyncio.Future[Any] | None = None
        bundles_changed: asyncio.Future[int] | None = None
        try:
            svids, federates = await self._next_svids(responses, what)
            seen = self._bundles.version
            yield self._state(svids, federates)
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(self._next_svids(responses, what))
                bundles_changed = asyncio.ensure_future(self._bundles.wait_changed(seen))
                done, _ = await asyncio.wait({pending, bundles_changed}, return_when=asyncio.FIRST_COMPLETED)
                if bundles_changed in done:
                    seen = bundles_changed.result()
                else:
                    bundles_changed.cancel()
                bundles_changed = None
                if pending in done:
                    svids, federates = pending.result()
                    pending = None
                yield self._state(svids, federates)
        finally:
            for future in (pending, bundles_changed):
                if future is not None and not future.done():
                    future.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await future
                elif future is not None and not future.cancelled():
                    future.exception()
            call.cancel()

    async def _next_svids(
        self, responses: AsyncIterator[di.SubscribeToX509SVIDsResponse], what: str
    ) -> tuple[tuple[X509Svid, ...], set[TrustDomain]]:
        try:
            response = await anext(responses)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc, f"SVIDs for {what}") from exc
        except StopAsyncIteration as exc:
            raise UnavailableError("SPIRE agent ended the SVID stream") from exc
        svids = parse_svids(response)
        if not svids:
            raise AuthorizationError("no identity issued")
        federates = set()
        for name in response.federates_with:
            with contextlib.suppress(SpiffeIdError):
                federates.add(TrustDomain.parse(name))
        return svids, federates


class OwnIdentity:
    """This agent's own X509-SVID, followed on the SPIRE agent's Workload API (for mTLS to the PQC CA)."""

    def __init__(self, workload_socket: str, agent_id: SpiffeId | None = None) -> None:
        self._address = f"unix://{workload_socket}"
        self._agent_id = agent_id
        self._current: TLSIdentity | None = None
        self._spiffe_id: SpiffeId | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="spire-pqc-own-identity")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def current(self, timeout: float = 10.0) -> TLSIdentity:
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError as exc:
            raise UnavailableError(f"no X509-SVID for this agent from {self._address} yet") from exc
        assert self._current is not None
        return self._current

    @property
    def spiffe_id(self) -> SpiffeId | None:
        """This agent's own SPIFFE ID, once SPIRE's Workload API gave it an SVID."""
        return self._spiffe_id

    def _pick(self, svids: Sequence[Any]) -> Any | None:
        if self._agent_id is None:
            return svids[0] if svids else None
        return next((s for s in svids if s.spiffe_id == self._agent_id), None)

    async def _follow(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            client = WorkloadClient(self._address)
            try:
                async for context in client.watch_x509_context():
                    svid = self._pick(context.svids)
                    if svid is None:
                        log.warning("SPIRE gave this agent no SVID for %s; waiting", self._agent_id)
                        continue
                    bundle = context.bundles.get(svid.spiffe_id.trust_domain)
                    pem = serialization.Encoding.PEM
                    key = serialization.load_der_private_key(svid.key_der, password=None)
                    self._current = TLSIdentity(
                        chain_pem=b"".join(c.public_bytes(pem) for c in svid.chain),
                        key_pem=key.private_bytes(
                            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                        ),
                        bundle_pem=bundle.to_pem(),
                    )
                    self._spiffe_id = SpiffeId.parse(str(svid.spiffe_id))
                    self._ready.set()
                    backoff.reset()
            except SpirePqcError as exc:
                log.warning("own X509-SVID from %s unavailable (%s); retrying", self._address, exc)
            finally:
                client.close()
            await asyncio.sleep(backoff.next())


def grpc_ca_client(config: CAClientConfig, own: OwnIdentity) -> FailoverCAClient:
    """One client per configured endpoint, behind failover (``ca.addresses``)."""
    timeout = config.timeout.total_seconds()
    return FailoverCAClient(
        [
            (address, GrpcCAClient(address, own.current, server_id=config.server_id, timeout=timeout))
            for address in config.addresses
        ]
    )
