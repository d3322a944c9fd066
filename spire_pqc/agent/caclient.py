"""Clients of the PQC CA: one interface, an in-process one (dev) and a gRPC one (SPIRE mode).

:class:`CAClient` is all the provisioner needs: ``await issue(request) -> IssueResponse``. Failures
are :class:`~spire_pqc.errors.IssuanceError` (the CA refused; ``reason`` says why) or
:class:`~spire_pqc.errors.UnavailableError` (the CA could not be reached; retry later).

:class:`GrpcCAClient` calls ``spire_pqc.ca.v1.PQCCertificateAuthority/IssuePQCSVID`` over TLS 1.3
with mutual authentication: the client certificate is the node agent's own X509-SVID, the server is
verified against the trust domain's classical bundle. grpcio's TLS (BoringSSL) offers
X25519MLKEM768. grpcio verifies the server *name* (DNS SAN) and offers no hook to check a SPIFFE
ID (STYLE.md §6), so the CA certificate must carry the DNS name given as ``ca.server_name``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import grpc.aio

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import IssueRequest, IssueResponse
from spire_pqc.crypto.aio import run_crypto
from spire_pqc.errors import IssuanceError, UnavailableError

log = logging.getLogger(__name__)


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
    """``IssuePQCSVID`` over mTLS; a new channel whenever the agent's own SVID rotates."""

    def __init__(
        self,
        address: str,
        identity: Callable[[], Awaitable[TLSIdentity]],
        *,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._address = address
        self._identity = identity
        self._server_name = server_name
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._channel_identity: TLSIdentity | None = None

    async def _stub(self) -> ca_pb2_grpc.PQCCertificateAuthorityAsyncStub:
        identity = await self._identity()
        if self._channel is None or identity != self._channel_identity:
            if self._channel is not None:
                await self._channel.close(None)
            credentials = grpc.ssl_channel_credentials(
                root_certificates=identity.bundle_pem,
                private_key=identity.key_pem,
                certificate_chain=identity.chain_pem,
            )
            options = [("grpc.ssl_target_name_override", self._server_name)] if self._server_name else []
            self._channel = grpc.aio.secure_channel(self._address, credentials, options=options)
            self._channel_identity = identity
        return ca_pb2_grpc.PQCCertificateAuthorityStub(self._channel)

    async def issue(self, request: IssueRequest) -> IssueResponse:
        stub = await self._stub()
        message = ca_pb2.IssuePQCSVIDRequest(
            classical_svid_chain=list(request.classical_chain),
            mldsa65_public_key=request.mldsa_spki,
            mlkem768_public_key=request.mlkem_spki,
            timestamp_unix_ms=request.timestamp_ms,
            nonce=request.nonce,
            classical_proof=request.classical_proof,
            mldsa_proof=request.mldsa_proof,
        )
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
