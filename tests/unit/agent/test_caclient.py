"""GrpcCAClient: IssuePQCSVID over mutual TLS (grpcio) against a real endpoint on loopback."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2, ca_pb2_grpc
from spire_pqc.agent.caclient import GrpcCAClient, TLSIdentity
from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import IssueRequest, build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.errors import IssuanceError, UnavailableError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())  # type: ignore[no-any-return]


def _server_cert(ca: DevClassicalCA) -> tuple[bytes, bytes]:
    """The endpoint's identity: an X509-SVID for SPIRE's server ID, as the plugin presents."""
    cert, key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/spire/server"))
    return cert.public_bytes(PEM), _pem_key(key)


class Endpoint(ca_pb2_grpc.PQCCertificateAuthorityServicer):
    def __init__(self, issuer: PQCIssuer) -> None:
        self.issuer = issuer
        self.client_certs: list[bytes] = []

    async def IssuePQCSVID(self, request: Any, context: Any) -> Any:
        self.client_certs.extend(context.auth_context().get("x509_pem_cert", []))
        try:
            issued = self.issuer.issue(
                IssueRequest(
                    tuple(request.classical_svid_chain), request.mldsa65_public_key, request.mlkem768_public_key,
                    request.timestamp_unix_ms, request.nonce, request.classical_proof, request.mldsa_proof,
                )
            )  # fmt: skip
        except IssuanceError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return ca_pb2.IssuePQCSVIDResponse(
            pqc_svid_chain=list(issued.response.pqc_svid_chain),
            kem_certificate_chain=list(issued.response.kem_certificate_chain),
            pqc_bundle=list(issued.response.pqc_bundle),
        )


@pytest.mark.asyncio
async def test_issue_over_mtls_and_error_mapping() -> None:
    hierarchy = PQCHierarchy.generate(TD)
    ca = DevClassicalCA(TD, hierarchy.intermediate.key)
    issuer = PQCIssuer(hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [ca.certificate])]))
    endpoint = Endpoint(issuer)
    server = grpc.aio.server()
    ca_pb2_grpc.add_PQCCertificateAuthorityServicer_to_server(endpoint, server)
    cert_pem, key_pem = _server_cert(ca)
    bundle_pem = ca.certificate.public_bytes(PEM)
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=bundle_pem, require_client_auth=True
        ),
    )
    await server.start()
    agent_cert, agent_key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/spire-pqc/agent"))
    identity = TLSIdentity(agent_cert.public_bytes(PEM), _pem_key(agent_key), bundle_pem)

    async def current() -> TLSIdentity:
        return identity

    client = GrpcCAClient(f"127.0.0.1:{port}", current, timeout=10)
    try:
        workload_cert, workload_key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/web"))
        mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        request = build_request(
            (workload_cert.public_bytes(DER),),
            workload_key,
            mldsa,
            mlkem.public_key().spki(),
            timestamp_ms=now_ms,
        )
        response = await client.issue(request)
        leaf = x509.load_der_x509_certificate(response.pqc_svid_chain[0])
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        ) == ["spiffe://example.org/web"]
        assert response.pqc_bundle == (hierarchy.root.public_bytes(DER),)
        assert (
            endpoint.client_certs and b"BEGIN CERTIFICATE" in endpoint.client_certs[0]
        )  # mTLS with our SVID
        # A replayed request is refused by the CA: IssuanceError, not a transport error.
        with pytest.raises(IssuanceError, match="replay"):
            await client.issue(request)
    finally:
        await client.close()
        await server.stop(None)
    # Nobody listening any more: UnavailableError, so the provisioner retries. It names the CA's address
    # and the cause, never the bridge's internal Unix socket.
    client = GrpcCAClient(f"127.0.0.1:{port}", current, timeout=2)
    try:
        with pytest.raises(UnavailableError) as info:
            await client.issue(request)
        message = str(info.value)
        assert message.startswith(f"PQC CA 127.0.0.1:{port}: UNAVAILABLE: cannot reach 127.0.0.1:{port}: "), (
            message
        )
        assert "refused" in message.lower() and "spq-bridge" not in message and "unix:" not in message
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_a_rotated_agent_svid_is_presented_on_the_next_issue() -> None:
    """The agent's own SVID rotates (SPIRE renews it at half its lifetime): the next request must go
    over a connection that presents the new one, or the CA refuses the expired one once it lapses."""
    hierarchy = PQCHierarchy.generate(TD)
    ca = DevClassicalCA(TD, hierarchy.intermediate.key)
    issuer = PQCIssuer(hierarchy.intermediate, TD, BundleSet([X509Bundle(TD, [ca.certificate])]))
    endpoint = Endpoint(issuer)
    server = grpc.aio.server()
    ca_pb2_grpc.add_PQCCertificateAuthorityServicer_to_server(endpoint, server)
    cert_pem, key_pem = _server_cert(ca)
    bundle_pem = ca.certificate.public_bytes(PEM)
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=bundle_pem, require_client_auth=True
        ),
    )
    await server.start()
    identities = []
    for _ in range(2):
        cert, key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/spire-pqc/agent"))
        identities.append(TLSIdentity(cert.public_bytes(PEM), _pem_key(key), bundle_pem))
    current = [identities[0]]

    async def identity() -> TLSIdentity:
        return current[0]

    def request() -> IssueRequest:
        cert, key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/web"))
        return build_request(
            (cert.public_bytes(DER),), key, MLDSA65PrivateKey.generate(),
            MLKEM768PrivateKey.generate().public_key().spki(),
            timestamp_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        )  # fmt: skip

    client = GrpcCAClient(f"127.0.0.1:{port}", identity, timeout=10)
    try:
        await client.issue(request())
        assert endpoint.client_certs[-1] == identities[0].chain_pem
        current[0] = identities[1]
        await client.issue(request())
        assert endpoint.client_certs[-1] == identities[1].chain_pem
    finally:
        await client.close()
        await server.stop(None)
