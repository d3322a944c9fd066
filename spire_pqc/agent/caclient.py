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
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import IssueRequest, IssueResponse
from spire_pqc.channel.bridge import ClientIdentity, TLSBridge
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import IssuanceError, SpirePqcError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, match_id
from spire_pqc.svid import spiffe_id_of

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


class LocalCAClient:
    """The dev source's in-process PQC CA; the issuer's checks run off the event loop."""

    def __init__(self, issuer: PQCIssuer) -> None:
        self._issuer = issuer

    async def issue(self, request: IssueRequest) -> IssueResponse:
        issued = await run_crypto(lambda: self._issuer.issue(request))
        return issued.response

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class TLSIdentity:
    """The agent's own X509-SVID (PEM chain and PKCS#8 PEM key) and the classical bundle (PEM)."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    bundle_pem: bytes


# What grpc status the endpoint uses for each refusal reason (spire_pqc/plugin/endpoint.py), inverted.
_REASON_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "malformed",
    grpc.StatusCode.FAILED_PRECONDITION: "stale",
    grpc.StatusCode.PERMISSION_DENIED: "refused",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.ALREADY_EXISTS: "duplicate",
}
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


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
        self._client: ClientIdentity | None = None
        self._bundles: BundleSet | None = None

    def _load(self, identity: TLSIdentity) -> None:
        chain = tuple(x509.load_pem_x509_certificates(identity.chain_pem))
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
        own = spiffe_id_of(chain[0])
        self._client = ClientIdentity(chain, key)
        self._bundles = BundleSet.from_certificates(
            x509.load_pem_x509_certificates(identity.bundle_pem), trust_domain=own.trust_domain
        )
        if self._server_id is None:
            # SPIRE's server SVID: the identity the plugin's endpoint presents.
            self._server_id = SpiffeId.from_parts(own.trust_domain, "/spire/server")
        self._tls = identity

    def _current_client(self) -> ClientIdentity:
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
        if self._bridge is None:
            assert self._server_id is not None
            self._bridge = TLSBridge(
                self._host_port,
                self._current_client,
                self._current_bundles,
                match_id(self._server_id),
                timeout=self._timeout,
            )
            self._channel = grpc.aio.insecure_channel(self._bridge.target)
        assert self._channel is not None
        return ca_pb2_grpc.PQCCertificateAuthorityStub(self._channel)

    async def issue(self, request: IssueRequest) -> IssueResponse:
        stub = await self._stub()
        message = issue_request_message(request)
        try:
            reply = await stub.IssuePQCSVID(message, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in _TRANSIENT:
                raise UnavailableError(f"PQC CA {self._address}: {code.name}: {exc.details()}") from exc
            reason = _REASON_BY_STATUS.get(code, code.name.lower())
            raise IssuanceError(f"PQC CA {self._address}: {exc.details()}", reason=reason) from exc
        return IssueResponse(
            pqc_svid_chain=tuple(bytes(c) for c in reply.pqc_svid_chain),
            kem_certificate_chain=tuple(bytes(c) for c in reply.kem_certificate_chain),
            pqc_bundle=tuple(bytes(c) for c in reply.pqc_bundle),
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
