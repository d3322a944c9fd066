"""The agent's gRPC services (grpclib): the SPIFFE Workload API and the spire_pqc HybridWorkload extension.

Adapter between the domain (identity sources, PQC provisioner) and the wire: the pure ``compose_*``
functions build messages; the stream loops apply the Workload API rules
(``spiffe/spiffe:standards/SPIFFE_Workload_API.md``; docs/workload-api.md):

* every request must carry ``workload.spiffe.io: true`` — otherwise InvalidArgument;
* the caller is checked (:mod:`spire_pqc.agent.peercred`) before any of the request body is read,
  and the body is read within the limits of :mod:`spire_pqc.agent.connections` (over 4 MiB:
  ResourceExhausted; malformed: InvalidArgument; too many requests of one uid: ResourceExhausted);
* a caller with no identity gets PermissionDenied ("no identity issued"); one whose PID was reused
  since it connected, too, checked again after the identity source answered and before every send;
* Unavailable while initialising, while PQC credentials do not exist yet (extension only), or when
  the agent shuts down, so clients retry with backoff;
* streams send the full state at once and again after each change, never deltas, and never the
  same state twice;
* JWT profile (:mod:`spire_pqc.agent.jwtsvid`), when the identity source implements it (else
  Unimplemented): FetchJWTSVID requires a non-empty audience (InvalidArgument) and returns a JWT-SVID
  per identity of the caller, or only the requested ``spiffe_id`` (PermissionDenied if it is not
  one of them); FetchJWTBundles streams trust domain → JWKS JSON; ValidateJWTSVID requires audience
  and token and answers InvalidArgument with the reason when the token does not verify against the
  JWT bundle of its ``sub``'s trust domain. FetchWITSVID/FetchWITBundles are not mapped, so grpclib
  answers Unimplemented.
* hybrid JWT-SVIDs (:mod:`spire_pqc.agent.hybridjwt`, docs/pq-jwt.md) on the extension, when the
  identity source serves JWT-SVIDs and the CA client signs their PQC parts (else Unimplemented):
  FetchHybridJWTSVID has FetchJWTSVID's rules; a CA that refused or sent a PQC part that does not
  validate is Unavailable. ValidateHybridJWTSVID answers InvalidArgument with the failed check
  (``jwt-audience: …``). FetchPQCJWTBundles streams trust domain → PQC JWT bundle (JWK Set).

Message classes for the Workload API are py-spiffe's (``spiffe._proto.workload_pb2``), the only
definition that may exist in the process (§0 item 3); the method paths are declared here because
the proto has no package: ``/SpiffeWorkloadAPI/<Method>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from spiffe._proto import workload_pb2 as wl

from spire_pqc._internal import strictjson
from spire_pqc._internal.ratelimit import LogLimiter
from spire_pqc._internal.wire import SECURITY_HEADER, hybrid_method, workload_method
from spire_pqc._proto.spire_pqc.workload.v1 import workload_pb2 as hy
from spire_pqc.agent.caclient import CAClient, JwtSigningCA
from spire_pqc.agent.connections import ConnectionRegistry, Encoded
from spire_pqc.agent.grpchealth import HealthService
from spire_pqc.agent.hybridjwt import HybridJwtProvider, ServedHybridJwt
from spire_pqc.agent.jwtsvid import JwtProfile, JwtSvid, validate
from spire_pqc.agent.metrics import Metrics
from spire_pqc.agent.model import Caller, PqcCredentials, X509State
from spire_pqc.agent.peercred import CallerChanged
from spire_pqc.agent.perstate import PerState
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.agent.sources.base import IdentitySource
from spire_pqc.errors import (
    AuthorizationError,
    IssuanceError,
    RequestRefusedError,
    SpiffeIdError,
    UnavailableError,
    VerificationError,
)
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid
from spire_pqc.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)

NO_JWT = "JWT-SVIDs are not served by this identity source"
NO_HYBRID_JWT = "hybrid JWT-SVIDs are not served: no JWT-SVIDs, or a PQC CA that cannot sign them"

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
StreamHandler = Callable[[Stream[Any, Any]], Awaitable[None]]

# How each refusal of RequestRefusedError.reason reaches the caller.
_REFUSAL_STATUS = {
    "message_too_large": Status.RESOURCE_EXHAUSTED,
    "too_many_streams": Status.RESOURCE_EXHAUSTED,
    "too_many_bytes": Status.RESOURCE_EXHAUSTED,
    "malformed_request": Status.INVALID_ARGUMENT,
    "request_timeout": Status.DEADLINE_EXCEEDED,
}


# --- pure composition ----------------------------------------------------------------------------


def compose_x509_svid_response(state: X509State) -> wl.X509SVIDResponse:
    """Each SVID with its own trust domain's bundle; every other trust domain as federated."""
    response = wl.X509SVIDResponse()
    own = {svid.spiffe_id.trust_domain for svid in state.svids}
    for svid in state.svids:
        response.svids.append(
            wl.X509SVID(
                spiffe_id=str(svid.spiffe_id),
                x509_svid=svid.chain_der,
                x509_svid_key=svid.key_der,
                bundle=state.bundles.get(svid.spiffe_id.trust_domain, b""),
                hint=svid.hint,
            )
        )
    for td, der in state.bundles.items():
        if td not in own:
            response.federated_bundles[td.id_string()] = der
    return response


def compose_x509_bundles_response(state: X509State) -> wl.X509BundlesResponse:
    response = wl.X509BundlesResponse()
    for td, der in state.bundles.items():
        response.bundles[td.id_string()] = der
    return response


def compose_jwt_svid_response(svids: Sequence[JwtSvid]) -> wl.JWTSVIDResponse:
    response = wl.JWTSVIDResponse()
    for svid in svids:
        response.svids.append(wl.JWTSVID(spiffe_id=str(svid.spiffe_id), svid=svid.token, hint=svid.hint))
    return response


def compose_jwt_bundles_response(bundles: Mapping[TrustDomain, bytes]) -> wl.JWTBundlesResponse:
    response = wl.JWTBundlesResponse()
    for td, jwks in bundles.items():
        response.bundles[td.id_string()] = jwks
    return response


def compose_hybrid_jwt_response(svids: Sequence[ServedHybridJwt]) -> hy.HybridJWTSVIDResponse:
    return hy.HybridJWTSVIDResponse(
        svids=[
            hy.HybridJWTSVID(
                spiffe_id=str(s.spiffe_id), classical=s.token.classical, pqc=s.token.pqc, hint=s.hint
            )
            for s in svids
        ]
    )


def compose_pqc_jwt_bundles_response(bundles: Mapping[TrustDomain, PqcJwtBundle]) -> hy.PQCJWTBundlesResponse:
    return hy.PQCJWTBundlesResponse(bundles={td.name: b.to_jwks() for td, b in bundles.items()})


def compose_hybrid_response(
    credentials: Sequence[PqcCredentials],
    classical_bundles: Mapping[TrustDomain, bytes],
    pqc_bundles: Mapping[TrustDomain, bytes],
    revoked: Collection[str] = (),
) -> hy.HybridSVIDResponse:
    response = hy.HybridSVIDResponse(revoked_intermediates=sorted(revoked))
    own = set()
    for cred in credentials:
        svid = cred.classical
        td = svid.spiffe_id.trust_domain
        own.add(td)
        response.svids.append(
            hy.HybridSVID(
                spiffe_id=str(svid.spiffe_id),
                classical_chain=svid.chain_der,
                classical_key=svid.key_der,
                pqc_chain=b"".join(cred.pqc_chain),
                pqc_key=cred.pqc_key.pkcs8(),
                kem_certificate=b"".join(cred.kem_chain),
                kem_key=cred.kem_key.pkcs8(),
                classical_bundle=classical_bundles.get(td, b""),
                # The latest PQC bundle (a root added since these credentials were issued included).
                pqc_bundle=pqc_bundles.get(td) or b"".join(cred.pqc_bundle),
                hint=svid.hint,
            )
        )
    for td, der in pqc_bundles.items():
        if td not in own:
            response.federated_pqc_bundles[td.name] = der
    return response


def compose_pqc_bundles_response(
    pqc_bundles: Mapping[TrustDomain, bytes], revoked: Collection[str] = ()
) -> hy.PQCBundlesResponse:
    response = hy.PQCBundlesResponse(revoked_intermediates=sorted(revoked))
    for td, der in pqc_bundles.items():
        response.bundles[td.name] = der
    return response


# --- shared stream machinery ---------------------------------------------------------------------


@contextlib.contextmanager
def _grpc_errors() -> Iterator[None]:
    """Domain errors → Workload API status codes."""
    try:
        yield
    except AuthorizationError as exc:
        raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from exc
    except UnavailableError as exc:
        raise GRPCError(Status.UNAVAILABLE, str(exc)) from exc
    except IssuanceError as exc:  # the PQC CA refused (hybrid JWT-SVIDs): nothing the caller can fix
        raise GRPCError(Status.UNAVAILABLE, f"the PQC CA did not sign: {exc}") from exc


def _audience(values: Sequence[str]) -> list[str]:
    audience = list(values)
    if not audience or not all(audience):
        raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
    return audience


def _requested_id(value: str) -> SpiffeId | None:
    if not value:
        return None
    try:
        return SpiffeId.parse(value)
    except SpiffeIdError as exc:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {exc}") from exc


@dataclass(frozen=True)
class _Answer:
    """A composed response, serialized, and how many identities it carries (for the metric)."""

    encoded: Encoded
    identities: int


class _Services:
    """State shared by both services: where identities come from and who is calling."""

    def __init__(
        self,
        source: IdentitySource,
        provisioner: PqcProvisioner,
        connections: ConnectionRegistry,
        metrics: Metrics,
        *,
        first_pqc_wait: float = 5.0,
        jwt_ca: JwtSigningCA | None = None,
    ) -> None:
        self.source = source
        self.provisioner = provisioner
        self.connections = connections
        self.metrics = metrics
        self.first_pqc_wait = first_pqc_wait
        self._log = LogLimiter()
        # Per state object (perstate.py): provisioning started; the Workload API's X.509 answers,
        # which depend on the state alone, serialized once for every stream that sends them.
        self._ensured: PerState[None] = PerState()
        self.x509_svid_answers: PerState[_Answer | None] = PerState()
        self.x509_bundles_answers: PerState[_Answer | None] = PerState()
        self.hybrid_jwt = (
            HybridJwtProvider(source, jwt_ca, provisioner)
            if jwt_ca is not None and isinstance(source, JwtProfile)
            else None
        )

    def guard(self, handler: StreamHandler) -> StreamHandler:
        """Every RPC: counted as a request in progress (per-uid cap, idle timer); refusals mapped."""

        async def guarded(stream: Stream[Any, Any]) -> None:
            try:
                with self.connections.active(stream):
                    await handler(stream)
            except RequestRefusedError as exc:
                self.refused(stream, exc.reason, logging.INFO, "refused a request: %s", exc)
                raise GRPCError(_REFUSAL_STATUS.get(exc.reason, Status.INVALID_ARGUMENT), str(exc)) from None

        return guarded

    def refused(self, stream: Stream[Any, Any], reason: str, level: int, msg: str, *args: object) -> None:
        """Count a refusal; log it (at most one line per reason and interval) with who asked."""
        self.metrics.requests_refused.labels(reason=reason).inc()
        self._log.log(log, level, reason, msg + " (%s)", *args, self.connections.describe(stream))

    async def begin(self, stream: Stream[Any, Any], request_type: type[R]) -> Caller:
        caller, _ = await self.begin_request(stream, request_type)
        return caller

    async def begin_request(self, stream: Stream[Any, Any], request_type: type[R]) -> tuple[Caller, R]:
        """Security header, caller attestation, then the request: no body byte of an unchecked caller
        is read."""
        metadata = stream.metadata
        if metadata is None or metadata.get(SECURITY_HEADER) != "true":
            self.metrics.requests_refused.labels(reason="missing_header").inc()
            raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request")
        caller = self.caller(stream)
        request = await self.connections.read_request(stream, request_type)
        return caller, request

    def jwt_source(self) -> JwtProfile:
        if not isinstance(self.source, JwtProfile):
            raise GRPCError(Status.UNIMPLEMENTED, NO_JWT)
        return self.source

    def hybrid_jwt_provider(self) -> HybridJwtProvider:
        if self.hybrid_jwt is None:
            raise GRPCError(Status.UNIMPLEMENTED, NO_HYBRID_JWT)
        return self.hybrid_jwt

    def caller(self, stream: Stream[Any, Any], answered: X509State | None = None) -> Caller:
        """The caller, if it is still the process that connected (PermissionDenied otherwise);
        ``answered``: the state about to be sent (checked once per state and PID, peercred.py)."""
        try:
            return self.connections.caller(stream, answered)
        except CallerChanged as exc:
            self.refused(stream, "pid_reused", logging.WARNING, "security event: refused a caller: %s", exc)
            raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from exc
        except AuthorizationError as exc:
            self.refused(stream, "caller_unknown", logging.INFO, "refused a caller: %s", exc)
            raise GRPCError(Status.PERMISSION_DENIED, str(exc)) from exc

    @contextlib.contextmanager
    def open_stream(self, rpc: str) -> Iterator[None]:
        self.metrics.open_streams.labels(rpc=rpc).inc()
        try:
            with _grpc_errors():
                yield
        finally:
            self.metrics.open_streams.labels(rpc=rpc).dec()

    async def serve(
        self,
        stream: Stream[Any, M],
        rpc: str,
        compose: Callable[[X509State], M | None],
        *,
        request_type: type[Message],
        service: str,
        follow_pqc: bool,
        count: Callable[[M], int],
        not_ready: Callable[[X509State], str],
        answers: PerState[_Answer | None] | None = None,
    ) -> None:
        """The stream loop: send ``compose(state)`` now and whenever it changes.

        Wakes on a new state from the identity source and, with ``follow_pqc``, on new PQC
        credentials. ``compose`` returning None means "not available yet": before anything was
        sent, the first issuance attempt is awaited (bounded), then Unavailable is returned.

        ``answers``: when ``compose`` depends on the state alone, its serialized result is kept per
        state object there and every stream sending that state sends the same bytes.
        """
        caller = await self.begin(stream, request_type)
        served = self.metrics.identities_served.labels(service=service)

        def answer(state: X509State) -> _Answer | None:
            message = compose(state)
            if message is None:
                return None
            return _Answer(
                Encoded(type(message), message.SerializeToString(deterministic=True)), count(message)
            )

        with self.open_stream(rpc):
            states = self.source.watch(caller)
            pending: asyncio.Future[X509State] | None = None
            changed: asyncio.Future[int] | None = None
            try:
                state = await anext(states)
                seen_pqc = self.provisioner.changes.version
                last: bytes | None = None
                while True:
                    self._ensured.get(
                        state, functools.partial(self.provisioner.ensure, state.svids, state.bundles)
                    )
                    reply = (
                        answer(state)
                        if answers is None
                        else answers.get(state, functools.partial(answer, state))
                    )
                    if reply is None and last is None and follow_pqc:
                        await self.provisioner.wait_attempted(state.svids, self.first_pqc_wait)
                        reply = answer(state)
                    if reply is None and last is None:
                        raise UnavailableError(not_ready(state))
                    if reply is not None and reply.encoded.data != last:
                        # The process that connected must still be the one answered (once per state and PID).
                        self.caller(stream, answered=state)
                        await stream.send_message(cast(M, reply.encoded))
                        served.inc(reply.identities)
                        last = reply.encoded.data
                    if not follow_pqc:  # the source's next state is the only thing to wait for
                        state = await anext(states)
                        continue
                    if pending is None:
                        pending = asyncio.ensure_future(anext(states))
                    changed = asyncio.ensure_future(self.provisioner.changes.wait_changed(seen_pqc))
                    waiters: set[asyncio.Future[Any]] = {pending, changed}
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    if changed in done:
                        seen_pqc = changed.result()
                    else:
                        changed.cancel()
                    changed = None
                    if pending in done:
                        state = pending.result()
                        pending = None
            except StopAsyncIteration as exc:
                raise UnavailableError("identity source ended the stream") from exc
            finally:
                for future in (pending, changed):
                    if future is None:
                        continue
                    if not future.done():
                        future.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await future
                    elif not future.cancelled():
                        future.exception()  # both may have failed at once (shutdown); one error is enough
                await _aclose(states)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):
            await close()


# --- the services ----------------------------------------------------------------------------------


class WorkloadAPIService:
    """``SpiffeWorkloadAPI``: X.509 and JWT profiles from the identity source."""

    def __init__(self, shared: _Services) -> None:
        self._s = shared

    async def fetch_x509_svid(self, stream: Stream[wl.X509SVIDRequest, wl.X509SVIDResponse]) -> None:
        await self._s.serve(
            stream,
            "FetchX509SVID",
            compose_x509_svid_response,
            request_type=wl.X509SVIDRequest,
            service="workload",
            follow_pqc=False,
            count=lambda m: len(m.svids),
            not_ready=lambda _: "no SVID yet",
            answers=self._s.x509_svid_answers,
        )

    async def fetch_x509_bundles(self, stream: Stream[wl.X509BundlesRequest, wl.X509BundlesResponse]) -> None:
        await self._s.serve(
            stream,
            "FetchX509Bundles",
            compose_x509_bundles_response,
            request_type=wl.X509BundlesRequest,
            service="workload-bundles",
            follow_pqc=False,
            count=lambda m: 0,
            not_ready=lambda _: "no bundle yet",
            answers=self._s.x509_bundles_answers,
        )

    async def fetch_jwt_svid(self, stream: Stream[wl.JWTSVIDRequest, wl.JWTSVIDResponse]) -> None:
        caller, request = await self._s.begin_request(stream, wl.JWTSVIDRequest)
        source = self._s.jwt_source()
        audience = _audience(request.audience)
        spiffe_id = _requested_id(request.spiffe_id)
        with _grpc_errors():
            svids = await source.fetch_jwt_svids(caller, audience, spiffe_id)
        if not svids:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        self._s.caller(stream)  # the process that connected must still be the one answered
        await stream.send_message(compose_jwt_svid_response(svids))
        self._s.metrics.identities_served.labels(service="jwt").inc(len(svids))

    async def fetch_jwt_bundles(self, stream: Stream[wl.JWTBundlesRequest, wl.JWTBundlesResponse]) -> None:
        caller = await self._s.begin(stream, wl.JWTBundlesRequest)
        source = self._s.jwt_source()
        with self._s.open_stream("FetchJWTBundles"):
            updates = source.watch_jwt_bundles(caller)
            try:
                last: bytes | None = None
                async for bundles in updates:
                    message = compose_jwt_bundles_response(bundles)
                    wire = message.SerializeToString(deterministic=True)
                    if wire != last:  # full state, never the same state twice
                        self._s.caller(stream)
                        await stream.send_message(message)
                        last = wire
                raise UnavailableError("identity source ended the stream")
            finally:
                await _aclose(updates)

    async def validate_jwt_svid(
        self, stream: Stream[wl.ValidateJWTSVIDRequest, wl.ValidateJWTSVIDResponse]
    ) -> None:
        _, request = await self._s.begin_request(stream, wl.ValidateJWTSVIDRequest)
        source = self._s.jwt_source()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            raise GRPCError(Status.INVALID_ARGUMENT, "svid must be specified")
        with _grpc_errors():
            bundles = source.jwt_bundles()
        try:
            spiffe_id, claims = validate(request.svid, request.audience, bundles)
        except VerificationError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from exc
        struct = Struct()
        struct.update(claims)
        await stream.send_message(wl.ValidateJWTSVIDResponse(spiffe_id=str(spiffe_id), claims=struct))

    def __mapping__(self) -> dict[str, Handler]:
        base = workload_method("")
        return {
            base + "FetchX509SVID": Handler(
                self._s.guard(self.fetch_x509_svid),
                Cardinality.UNARY_STREAM,
                wl.X509SVIDRequest,
                wl.X509SVIDResponse,
            ),
            base + "FetchX509Bundles": Handler(
                self._s.guard(self.fetch_x509_bundles),
                Cardinality.UNARY_STREAM,
                wl.X509BundlesRequest,
                wl.X509BundlesResponse,
            ),
            base + "FetchJWTSVID": Handler(
                self._s.guard(self.fetch_jwt_svid),
                Cardinality.UNARY_UNARY,
                wl.JWTSVIDRequest,
                wl.JWTSVIDResponse,
            ),
            base + "FetchJWTBundles": Handler(
                self._s.guard(self.fetch_jwt_bundles),
                Cardinality.UNARY_STREAM,
                wl.JWTBundlesRequest,
                wl.JWTBundlesResponse,
            ),
            base + "ValidateJWTSVID": Handler(
                self._s.guard(self.validate_jwt_svid),
                Cardinality.UNARY_UNARY,
                wl.ValidateJWTSVIDRequest,
                wl.ValidateJWTSVIDResponse,
            ),
        }


class HybridWorkloadService:
    """``spire_pqc.workload.v1.HybridWorkload``: the caller's hybrid SVIDs and the PQC bundles."""

    def __init__(self, shared: _Services) -> None:
        self._s = shared

    def _hybrid(self, state: X509State) -> hy.HybridSVIDResponse | None:
        prov = self._s.provisioner
        ready = [c for c in (prov.credentials_for(s) for s in state.svids) if c is not None]
        if not ready:
            return None
        return compose_hybrid_response(ready, state.bundles, prov.pqc_bundles(), prov.revoked)

    def _not_ready(self, state: X509State) -> str:
        errors = [e for e in (self._s.provisioner.last_error(s) for s in state.svids) if e]
        why = f": {errors[0]}" if errors else ""
        return f"PQC credentials are not available yet{why}"

    async def fetch_hybrid_svids(self, stream: Stream[hy.HybridSVIDRequest, hy.HybridSVIDResponse]) -> None:
        await self._s.serve(
            stream,
            "FetchHybridSVIDs",
            self._hybrid,
            request_type=hy.HybridSVIDRequest,
            service="hybrid",
            follow_pqc=True,
            count=lambda m: len(m.svids),
            not_ready=self._not_ready,
        )

    def _bundles(self, state: X509State) -> hy.PQCBundlesResponse | None:
        bundles = self._s.provisioner.pqc_bundles()
        return compose_pqc_bundles_response(bundles, self._s.provisioner.revoked) if bundles else None

    async def fetch_pqc_bundles(self, stream: Stream[hy.PQCBundlesRequest, hy.PQCBundlesResponse]) -> None:
        await self._s.serve(
            stream,
            "FetchPQCBundles",
            self._bundles,
            request_type=hy.PQCBundlesRequest,
            service="pqc-bundles",
            follow_pqc=True,
            count=lambda m: 0,
            not_ready=self._not_ready,
        )

    async def fetch_hybrid_jwt_svid(
        self, stream: Stream[hy.HybridJWTSVIDRequest, hy.HybridJWTSVIDResponse]
    ) -> None:
        caller, request = await self._s.begin_request(stream, hy.HybridJWTSVIDRequest)
        provider = self._s.hybrid_jwt_provider()
        audience = _audience(request.audience)
        spiffe_id = _requested_id(request.spiffe_id)
        with _grpc_errors():
            svids = await provider.fetch(caller, audience, spiffe_id)
        if not svids:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        self._s.caller(stream)  # the process that connected must still be the one answered
        await stream.send_message(compose_hybrid_jwt_response(svids))
        self._s.metrics.identities_served.labels(service="jwt").inc(len(svids))

    async def validate_hybrid_jwt_svid(
        self, stream: Stream[hy.ValidateHybridJWTSVIDRequest, hy.ValidateHybridJWTSVIDResponse]
    ) -> None:
        _, request = await self._s.begin_request(stream, hy.ValidateHybridJWTSVIDRequest)
        provider = self._s.hybrid_jwt_provider()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not request.classical:
            raise GRPCError(Status.INVALID_ARGUMENT, "the classical part must be specified")
        try:
            verified = await provider.validate(
                HybridJwtSvid(request.classical, request.pqc), request.audience
            )
        except VerificationError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from exc
        claims = strictjson.dumps_compact(dict(verified.claims))
        await stream.send_message(
            hy.ValidateHybridJWTSVIDResponse(spiffe_id=str(verified.spiffe_id), claims_json=claims)
        )

    def _jwt_bundles(self, state: X509State) -> hy.PQCJWTBundlesResponse | None:
        bundles = self._s.provisioner.pqc_jwt_bundles()
        return compose_pqc_jwt_bundles_response(bundles) if bundles else None

    async def fetch_pqc_jwt_bundles(
        self, stream: Stream[hy.PQCJWTBundlesRequest, hy.PQCJWTBundlesResponse]
    ) -> None:
        self._s.hybrid_jwt_provider()
        await self._s.serve(
            stream,
            "FetchPQCJWTBundles",
            self._jwt_bundles,
            request_type=hy.PQCJWTBundlesRequest,
            service="pqc-jwt-bundles",
            follow_pqc=True,
            count=lambda m: 0,
            not_ready=lambda _: "no PQC JWT bundle yet",
        )

    def __mapping__(self) -> dict[str, Handler]:
        base = hybrid_method("")
        return {
            base + "FetchHybridJWTSVID": Handler(
                self._s.guard(self.fetch_hybrid_jwt_svid),
                Cardinality.UNARY_UNARY,
                hy.HybridJWTSVIDRequest,
                hy.HybridJWTSVIDResponse,
            ),
            base + "ValidateHybridJWTSVID": Handler(
                self._s.guard(self.validate_hybrid_jwt_svid),
                Cardinality.UNARY_UNARY,
                hy.ValidateHybridJWTSVIDRequest,
                hy.ValidateHybridJWTSVIDResponse,
            ),
            base + "FetchPQCJWTBundles": Handler(
                self._s.guard(self.fetch_pqc_jwt_bundles),
                Cardinality.UNARY_STREAM,
                hy.PQCJWTBundlesRequest,
                hy.PQCJWTBundlesResponse,
            ),
            base + "FetchHybridSVIDs": Handler(
                self._s.guard(self.fetch_hybrid_svids),
                Cardinality.UNARY_STREAM,
                hy.HybridSVIDRequest,
                hy.HybridSVIDResponse,
            ),
            base + "FetchPQCBundles": Handler(
                self._s.guard(self.fetch_pqc_bundles),
                Cardinality.UNARY_STREAM,
                hy.PQCBundlesRequest,
                hy.PQCBundlesResponse,
            ),
        }


def build_services(
    source: IdentitySource,
    provisioner: PqcProvisioner,
    connections: ConnectionRegistry,
    metrics: Metrics,
    *,
    first_pqc_wait: float = 5.0,
    ca: CAClient | None = None,
    health: Mapping[str, Callable[[], bool]] | None = None,
) -> list[Any]:
    """The agent socket's services; ``health`` maps service names to "serving?" (grpc.health.v1)."""
    jwt_ca = ca if isinstance(ca, JwtSigningCA) else None
    shared = _Services(
        source, provisioner, connections, metrics, first_pqc_wait=first_pqc_wait, jwt_ca=jwt_ca
    )
    statuses = health if health is not None else {"": lambda: True}
    health_service = HealthService(statuses, read_request=connections.read_request, guard=shared.guard)
    return [WorkloadAPIService(shared), HybridWorkloadService(shared), health_service]
