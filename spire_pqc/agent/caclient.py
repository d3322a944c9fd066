"""Clients of the PQC CA: one interface, an in-process one (dev) and a gRPC one (SPIRE mode).

:class:`CAClient` is all the provisioner needs: ``await issue(request) -> IssueResponse``. Failures
are :class:`~spire_pqc.errors.IssuanceError` (the CA refused; ``reason`` says why) or
:class:`~spire_pqc.errors.UnavailableError` (the CA could not be reached; retry later).

:class:`GrpcCAClient` calls ``spire_pqc.ca.v1.PQCCertificateAuthority/IssuePQCSVID`` over TLS 1.3
with mutual authentication: the client certificate is the node agent's own X509-SVID. grpcio's
TLS client only checks DNS names and SPIRE's server SVID carries only a SPIFFE URI SAN, so the
connection goes through :class:`spire_pqc.channel.bridge.TLSBridge`: TLS 1.3 with X25519MLKEM768
only, the server verified against the trust domain's classical bundle and required to be
``server_id`` (default ``spiffe://<td>/spire/server``).

A refusal's reason is read from the status details (``spire_pqc.ca.v1.IssuanceRefusal`` in the
google.rpc.Status), so ``IssuanceError.reason`` is the CA's exact :class:`RefusalReason`; a CA that
sends no details is understood from the status code alone. ``unavailable`` (the CA's ledger database
is down) is an :class:`UnavailableError` like a transport failure: retried, never final.

:class:`FailoverCAClient` spreads one agent over several endpoints (SPIRE HA, ``ca.addresses``).

:class:`JwtSigningCA` is the optional second half of a CA client: ``await sign_jwt_svid(token)`` obtains
the PQC part of a hybrid JWT-SVID (``SignJWTSVID``, docs/pq-jwt.md) with the same errors as ``issue``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar, cast, runtime_checkable

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_status import rpc_status

from spire_pqc._internal.backoff import Backoff
from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.jwtsigning import JwtSigning
from spire_pqc.ca.request import BundleUpdate, IssueRequest, IssueResponse
from spire_pqc.channel.bridge import TLSBridge
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import IssuanceError, RefusalReason, SpirePqcError, UnavailableError, VerificationError
from spire_pqc.jwtsvid.bundle import merge_jwks
from spire_pqc.spiffeid import SpiffeId, match_id
from spire_pqc.svid import X509Svid, spiffe_id_of

log = logging.getLogger(__name__)


def issue_request_message(request: IssueRequest) -> ca_pb2.IssuePQCSVIDRequest:
    """The domain issue request as the endpoint's protobuf message (the one place that converts it)."""
    return ca_pb2.IssuePQCSVIDRequest(
        classical_svid_chain=list(request.classical_chain),
        mldsa65_public_key=request.mldsa_spki,
        mlkem768_public_key=request.mlkem_spki,
        timestamp_unix_ms=request.timestamp_ms,
        nonce=request.nonce,
        classical_proof=request.classical_proof,
        mldsa_proof=request.mldsa_proof,
    )


class CAClient(Protocol):
    async def issue(self, request: IssueRequest) -> IssueResponse: ...

    async def close(self) -> None: ...


@runtime_checkable
class BundleFetcher(Protocol):
    """A CA client that can also say what the trust domain's PQC bundle and revocations are now."""

    async def fetch_bundle(self) -> BundleUpdate: ...


@dataclass(frozen=True)
class SignedJwtSvid:
    """What ``SignJWTSVID`` returns: the PQC part, the trust domain's PQC JWT bundle (JWK Set) and its
    PQC roots (DER)."""

    pqc_token: str = field(repr=False)
    pqc_jwt_bundle: bytes
    pqc_bundle: tuple[bytes, ...] = ()


@runtime_checkable
class JwtSigningCA(Protocol):
    async def sign_jwt_svid(self, classical_token: str) -> SignedJwtSvid: ...


T = TypeVar("T")


class LocalCAClient:
    """The dev source's in-process PQC CA; the issuer's checks run off the event loop. With ``jwt``
    (and the trust domain's classical JWT bundle) it also signs the PQC parts of JWT-SVIDs."""

    def __init__(
        self,
        issuer: PQCIssuer,
        *,
        jwt: JwtSigning | None = None,
        jwt_bundle: Callable[[], bytes] | None = None,
    ) -> None:
        self._issuer = issuer
        self._jwt = jwt
        self._jwt_bundle = jwt_bundle

    async def issue(self, request: IssueRequest) -> IssueResponse:
        issued = await run_crypto(lambda: self._issuer.issue(request))
        response = dataclasses.replace(
            issued.response, revoked_intermediates=tuple(sorted(self._issuer.revoked))
        )
        if self._jwt is None:
            return response
        return replace(response, pqc_jwt_bundle=self._jwt.jwks())

    async def fetch_bundle(self) -> BundleUpdate:
        encode = serialization.Encoding.DER
        return BundleUpdate(
            trust_domain=self._issuer.trust_domain.name,
            pqc_bundle=tuple(c.public_bytes(encode) for c in self._issuer.pqc_roots),
            revoked_intermediates=tuple(sorted(self._issuer.revoked)),
            pqc_jwt_bundle=self._jwt.jwks() if self._jwt is not None else b"",
            server_time_ms=int(time.time() * 1000),
        )

    async def sign_jwt_svid(self, classical_token: str) -> SignedJwtSvid:
        jwt, bundle = self._jwt, self._jwt_bundle
        if jwt is None or bundle is None:
            raise UnavailableError("this PQC CA does not sign JWT-SVIDs")
        try:
            pqc = await run_crypto(lambda: jwt.sign(classical_token, bundle()))
        except VerificationError as exc:
            raise IssuanceError(
                str(exc), reason=RefusalReason.UNTRUSTED_SVID, spiffe_id=exc.spiffe_id
            ) from exc
        return SignedJwtSvid(pqc_token=pqc, pqc_jwt_bundle=jwt.jwks(), pqc_bundle=tuple(jwt.roots_der()))

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class TLSIdentity:
    """The agent's own X509-SVID (PEM chain and PKCS#8 PEM key) and the classical bundle (PEM)."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes


# A CA that sends no IssuanceRefusal detail: the reason as far as its status code tells. ALREADY_EXISTS
# is replay *or* duplicate there; "duplicate" is the cautious reading (never retried blindly).
_REASON_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: RefusalReason.MALFORMED,
    grpc.StatusCode.FAILED_PRECONDITION: RefusalReason.STALE,
    grpc.StatusCode.PERMISSION_DENIED: RefusalReason.REFUSED,
    grpc.StatusCode.UNAUTHENTICATED: RefusalReason.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS: RefusalReason.DUPLICATE,
}
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# grpcio's own reconnection backoff grows to 120 s by default; a restarted endpoint must be found
# again within the agent's retry_max, so cap it.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)]


def refusal_of(error: grpc.aio.AioRpcError) -> tuple[RefusalReason, str | None] | None:
    """The CA's IssuanceRefusal detail (reason, SPIFFE ID), if the status carries one we understand."""
    try:
        # An AioRpcError answers code()/details()/trailing_metadata() like the grpc.Call this reads.
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:  # details that contradict the status itself: ignore them, use the code
        return None
    for detail in status.details if status is not None else ():
        refusal = ca_pb2.IssuanceRefusal()
        if not detail.Unpack(refusal):
            continue
        name = ca_pb2.RefusalReason.Name(refusal.reason) if refusal.reason in _KNOWN_WIRE else ""
        token = name.removeprefix("REFUSAL_REASON_")
        if token in RefusalReason.__members__:
            return RefusalReason[token], refusal.spiffe_id or None
    return None


_KNOWN_WIRE = set(ca_pb2.RefusalReason.values())


class GrpcCAClient:
    """``IssuePQCSVID`` through a hybrid-TLS bridge; picks up the agent's rotated SVID per connection."""

    def __init__(
        self,
        address: str,
        identity: Callable[[], Awaitable[TLSIdentity]],
        *,
        server_id: SpiffeId | None = None,
        timeout: float = 10.0,
    ) -> None:
        host, _, port = address.rpartition(":")
        self._address = address
        self._host_port = (host.strip("[]"), int(port))
        self._identity = identity
        self._server_id = server_id
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._bridge: TLSBridge | None = None
        self._tls: TLSIdentity | None = None
        self._client: X509Svid | None = None
        self._bundles: BundleSet | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def _load(self, identity: TLSIdentity) -> None:
        chain = tuple(x509.load_pem_x509_certificates(identity.chain_pem))
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
        own = spiffe_id_of(chain[0])
        self._client = X509Svid(own, chain, key)
        self._bundles = BundleSet.from_certificates(
            x509.load_pem_x509_certificates(identity.bundle_pem), trust_domain=own.trust_domain
        )
        if self._server_id is None:
            # SPIRE's server SVID: the identity the plugin's endpoint presents.
            self._server_id = SpiffeId.from_parts(own.trust_domain, "/spire/server")
        self._tls = identity

    def _current_client(self) -> X509Svid:
        assert self._client is not None
        return self._client

    def _current_bundles(self) -> BundleSet:
        assert self._bundles is not None
        return self._bundles

    async def _stub(self) -> ca_pb2_grpc.PQCCertificateAuthorityAsyncStub:
        identity = await self._identity()
        if identity != self._tls:
            try:
                self._load(identity)
            except (ValueError, SpirePqcError) as exc:
                raise UnavailableError(f"the agent's own X509-SVID is unusable for mTLS: {exc}") from exc
            # The open connection presents the SVID it was made with, and the CA checks it per call:
            # new calls go over a new connection; calls already under way finish on the old one.
            self._retire_connection()
        if self._bridge is None:
            assert self._server_id is not None
            self._bridge = TLSBridge(
                self._host_port,
                self._current_client,
                self._current_bundles,
                match_id(self._server_id),
                timeout=self._timeout,
            )
            self._channel = grpc.aio.insecure_channel(self._bridge.target, options=_CHANNEL_OPTIONS)
        assert self._channel is not None
        return ca_pb2_grpc.PQCCertificateAuthorityStub(self._channel)

    def _error(self, exc: grpc.aio.AioRpcError) -> SpirePqcError:
        """A failed call as UnavailableError (retry) or IssuanceError (the CA's refusal, with reason)."""
        code = exc.code()
        refusal = refusal_of(exc)
        if code in _TRANSIENT or (refusal is not None and refusal[0] is RefusalReason.UNAVAILABLE):
            return UnavailableError(f"PQC CA {self._address}: {code.name}: {self._why(exc)}")
        reason = refusal[0] if refusal is not None else _REASON_BY_STATUS.get(code, RefusalReason.REFUSED)
        error = IssuanceError(f"PQC CA {self._address}: {exc.details()}", reason=reason)
        error.spiffe_id = refusal[1] if refusal is not None else None
        return error

    async def issue(self, request: IssueRequest) -> IssueResponse:
        stub = await self._stub()
        message = issue_request_message(request)
        try:
            reply = await stub.IssuePQCSVID(message, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        return IssueResponse(
            pqc_svid_chain=tuple(bytes(c) for c in reply.pqc_svid_chain),
            kem_certificate_chain=tuple(bytes(c) for c in reply.kem_certificate_chain),
            pqc_bundle=tuple(bytes(c) for c in reply.pqc_bundle),
            pqc_jwt_bundle=bytes(reply.pqc_jwt_bundle),
            revoked_intermediates=tuple(str(k) for k in reply.revoked_intermediates),
        )

    async def fetch_bundle(self) -> BundleUpdate:
        stub = await self._stub()
        try:
            reply = await stub.FetchPQCBundle(ca_pb2.FetchPQCBundleRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise UnavailableError(f"PQC CA {self._address}: {exc.code().name}: {self._why(exc)}") from exc
        return BundleUpdate(
            trust_domain=reply.trust_domain,
            pqc_bundle=tuple(bytes(c) for c in reply.pqc_bundle),
            revoked_intermediates=tuple(str(k) for k in reply.revoked_intermediates),
            pqc_jwt_bundle=bytes(reply.pqc_jwt_bundle),
            server_time_ms=int(reply.server_time_unix_ms) or None,
        )

    async def sign_jwt_svid(self, classical_token: str) -> SignedJwtSvid:
        stub = await self._stub()
        message = ca_pb2.SignJWTSVIDRequest(classical_token=classical_token)
        try:
            reply = await stub.SignJWTSVID(message, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        return SignedJwtSvid(
            pqc_token=str(reply.pqc_token),
            pqc_jwt_bundle=bytes(reply.pqc_jwt_bundle),
            pqc_bundle=tuple(bytes(c) for c in reply.pqc_bundle),
        )

    def _retire_connection(self) -> None:
        channel, bridge = self._channel, self._bridge
        self._channel = self._bridge = None
        if channel is None or bridge is None:
            return

        async def retire() -> None:
            try:
                await channel.close(self._timeout)  # grace: the calls under way may finish
            finally:
                bridge.close()

        task = asyncio.get_running_loop().create_task(retire(), name="spire-pqc-ca-connection-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _why(self, exc: grpc.aio.AioRpcError) -> str:
        """The failure in terms of the CA's address: the bridge's own socket is an internal detail."""
        bridge = self._bridge
        if bridge is not None and bridge.last_error is not None:
            return f"cannot reach {bridge.last_error}"
        details = exc.details() or ""
        return details.replace(bridge.target, self._address) if bridge is not None else details

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)


@dataclass
class _Endpoint:
    address: str
    client: CAClient
    backoff: Backoff
    retry_at: float | None = None  # set while the endpoint is backing off


class FailoverCAClient:
    """Several PQC CA endpoints (SPIRE HA: every server hosts one, all share one ledger).

    Each :meth:`issue` asks the endpoints in the configured order, healthy ones first; one that was
    unavailable is moved behind the others for a backoff delay (exponential with jitter, from
    ``retry_initial`` to ``retry_max``; reset by its next success), so a dead server costs one failed
    attempt per delay, not one per request. Only :class:`UnavailableError` moves on to the next
    endpoint: a refusal (:class:`IssuanceError`) is the CA's decision about the request, the same at
    every server sharing the ledger, and is raised at once. When every endpoint is unavailable the
    caller gets one UnavailableError naming each failure (and retries with its own backoff).
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, CAClient]],
        *,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one PQC CA endpoint is needed")
        rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._endpoints = [
            _Endpoint(address, client, Backoff(retry_initial, retry_max, rng=rng))
            for address, client in endpoints
        ]
        self._clock = clock

    @property
    def addresses(self) -> list[str]:
        return [e.address for e in self._endpoints]

    def _order(self) -> list[_Endpoint]:
        now = self._clock()
        # Healthy endpoints in the configured order (a stable sort), then those backing off, soonest first.
        return sorted(self._endpoints, key=lambda e: e.retry_at if e.retry_at and e.retry_at > now else 0.0)

    async def issue(self, request: IssueRequest) -> IssueResponse:
        return await self._first(lambda client: client.issue(request))

    async def sign_jwt_svid(self, classical_token: str) -> SignedJwtSvid:
        async def sign(client: CAClient) -> SignedJwtSvid:
            if not isinstance(client, JwtSigningCA):
                raise UnavailableError("this PQC CA client cannot sign JWT-SVIDs")
            return await client.sign_jwt_svid(classical_token)

        return await self._first(sign)

    async def _first(self, call: Callable[[CAClient], Awaitable[T]]) -> T:
        failures = []
        for endpoint in self._order():
            try:
                response = await call(endpoint.client)
            except UnavailableError as exc:
                endpoint.retry_at = self._clock() + endpoint.backoff.next()
                failures.append(str(exc))
                if len(self._endpoints) > 1:
                    log.warning("PQC CA %s unavailable (%s); trying the next endpoint", endpoint.address, exc)
                continue
            if endpoint.retry_at is not None:
                log.info("PQC CA %s answers again", endpoint.address)
                endpoint.backoff.reset()
                endpoint.retry_at = None
            return response
        if len(failures) == 1:
            raise UnavailableError(failures[0])
        raise UnavailableError(f"no PQC CA endpoint answered: {'; '.join(failures)}")

    async def fetch_bundle(self) -> BundleUpdate:
        """The bundle of the first endpoint that answers, with the revocations and PQC JWT keys of
        *every* endpoint that answers: each SPIRE server certifies JWT signers under its own
        intermediate, so a token any of them signed validates here (docs/pq-jwt.md, SPIRE HA)."""
        now = self._clock()
        fetchers = [e for e in self._order() if isinstance(e.client, BundleFetcher)]
        healthy = [e for e in fetchers if not (e.retry_at and e.retry_at > now)]
        # Asked together (a dead endpoint costs one timeout, not one per endpoint); those backing off
        # only when no healthy one answers.
        updates, failures = await self._fetch_bundles(healthy)
        if not updates:
            more, failed = await self._fetch_bundles([e for e in fetchers if e not in healthy])
            updates, failures = more, failures + failed
        if not updates and len(failures) == 1:
            raise UnavailableError(failures[0])  # one endpoint: its error as it is (as issue() reports it)
        if not updates:
            raise UnavailableError(f"no PQC CA endpoint answered: {'; '.join(failures)}")
        first = updates[0]
        same = [u for u in updates if u.trust_domain == first.trust_domain]
        return replace(
            first,
            revoked_intermediates=tuple(sorted({k for u in same for k in u.revoked_intermediates})),
            pqc_jwt_bundle=merge_jwks([u.pqc_jwt_bundle for u in same]),
        )

    async def _fetch_bundles(self, endpoints: Sequence[_Endpoint]) -> tuple[list[BundleUpdate], list[str]]:
        async def one(endpoint: _Endpoint) -> BundleUpdate | str:
            client = cast(BundleFetcher, endpoint.client)
            try:
                update = await client.fetch_bundle()
            except UnavailableError as exc:
                endpoint.retry_at = self._clock() + endpoint.backoff.next()
                return str(exc)
            if endpoint.retry_at is not None:
                endpoint.backoff.reset()
                endpoint.retry_at = None
            return update

        results = await asyncio.gather(*(one(e) for e in endpoints))
        return [r for r in results if isinstance(r, BundleUpdate)], [r for r in results if isinstance(r, str)]

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()
