"""Adapter for SPIRE's IdentityProvider host service (reached through the go-plugin broker)."""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._proto.spire.hostservice.server.identityprovider.v1 import (
    identityprovider_pb2,
    identityprovider_pb2_grpc,
)
from spire_pqc.errors import MalformedCredentialError, UnavailableError
from spire_pqc.jwtsvid.classical import jwks_from_public_keys
from spire_pqc.plugin.endpoint import ServerIdentity
from spire_pqc.plugin.host import HostServiceBroker


def identity_fetcher(broker: HostServiceBroker, *, timeout: float = 10.0) -> ServerIdentity:
    """SPIRE server's own X509-SVID and key, and its trust bundle, from the IdentityProvider."""
    stub = identityprovider_pb2_grpc.IdentityProviderStub(broker.channel(timeout))
    try:
        response = stub.FetchX509Identity(identityprovider_pb2.FetchX509IdentityRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        raise UnavailableError(f"SPIRE IdentityProvider: {exc.code().name}: {exc.details()}") from exc
    try:
        chain = tuple(x509.load_der_x509_certificate(bytes(c)) for c in response.identity.cert_chain)
        key = serialization.load_der_private_key(bytes(response.identity.private_key), password=None)
        bundle = tuple(
            x509.load_der_x509_certificate(bytes(c.asn1)) for c in response.bundle.x509_authorities
        )
        jwt_bundle = jwks_from_public_keys(
            (k.key_id, bytes(k.public_key)) for k in response.bundle.jwt_authorities
        )
    except (ValueError, MalformedCredentialError) as exc:
        raise UnavailableError(f"SPIRE IdentityProvider returned an unusable identity: {exc}") from exc
    if not chain or not bundle:
        raise UnavailableError("SPIRE IdentityProvider returned no server SVID or an empty bundle")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServerIdentity(chain=chain, private_key_pem=key_pem, bundle=bundle, jwt_bundle=jwt_bundle)
