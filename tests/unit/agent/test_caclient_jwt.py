"""SignJWTSVID across the real gRPC boundary: the plugin's CAServicer in a grpcio server with mutual TLS,
the agent's GrpcCAClient. The CA signs only tokens SPIRE signed for its own trust domain, only for an
authorised agent, and its PQC part validates with the bundles it returns."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from spire_pqc._internal.buckets import TokenBuckets
from spire_pqc._proto.spire_pqc.ca.v1 import ca_pb2_grpc
from spire_pqc.agent.caclient import FailoverCAClient, GrpcCAClient, TLSIdentity
from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes
from spire_pqc.agent.pqc import PqcProvisioner
from spire_pqc.bundle import BundleSet
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.ca.issuer import IntermediateCA, PQCIssuer
from spire_pqc.ca.jwtsigning import IntermediateSigners, JwtSigning
from spire_pqc.ca.ledger import open_ledger
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import IssuanceError, RefusalReason, UnavailableError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
from spire_pqc.plugin.endpoint import CAServicer, ServerIdentity
from spire_pqc.plugin.metrics import PluginMetrics
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs
from tests.unit.agent.test_caclient_failover import PEM, Policy, _pem_key, identity_of
from tests.unit.credentials.pki import Domain

SPIRE_JWT_KEY = JwtSigningKey.generate()  # the key SPIRE signs JWT-SVIDs with (IdentityProvider)


class Identities:
    def __init__(self, domain: Domain) -> None:
        self.identity = ServerIdentity(
            chain=(), private_key_pem=b"", bundle=(domain.classical_ca.certificate,),
            jwt_bundle=jwks_bytes([SPIRE_JWT_KEY.public_jwk()]),
        )  # fmt: skip

    def current(self) -> ServerIdentity:
        return self.identity


@contextmanager
def endpoint(
    domain: Domain, policy: Policy, *, jwt: bool = True, rate: TokenBuckets | None = None
) -> Iterator[str]:
    ca = domain.classical_ca
    cert, key = ca.issue_svid(SpiffeId.parse("spiffe://example.org/spire/server"))

    def factory(bundles: BundleSet) -> PQCIssuer:
        return PQCIssuer(
            domain.hierarchy.intermediate,
            domain.trust_domain,
            bundles,
            ledger=open_ledger("sqlite://:memory:"),
        )

    signing = JwtSigning(
        domain.trust_domain,
        IntermediateSigners(domain.hierarchy.intermediate, domain.trust_domain),
        (domain.hierarchy.root,),
    )
    servicer = CAServicer(
        policy,  # type: ignore[arg-type]
        Identities(domain),  # type: ignore[arg-type]
        factory,
        PluginMetrics(),
        jwt=signing if jwt else None,
        jwt_rate=rate,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ca_pb2_grpc.add_PQCCertificateAuthorityServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(_pem_key(key), cert.public_bytes(PEM))],
        root_certificates=ca.certificate.public_bytes(PEM),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


@asynccontextmanager
async def client(domain: Domain, address: str) -> AsyncIterator[GrpcCAClient]:
    identity = identity_of(domain)

    async def current() -> TLSIdentity:
        return identity

    c = GrpcCAClient(address, current, timeout=20)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.create("example.org")


def _token(key: JwtSigningKey, sub: str = "spiffe://example.org/app", **kwargs: Any) -> str:
    return key.sign(SpiffeId.parse(sub), ["a"], dt.timedelta(minutes=5), **kwargs)


@pytest.mark.asyncio
async def test_the_pqc_part_validates_with_the_bundles_the_ca_returns(domain: Domain) -> None:
    with endpoint(domain, Policy()) as address:
        async with client(domain, address) as ca:
            classical = _token(SPIRE_JWT_KEY)
            signed = await ca.sign_jwt_svid(classical)
    td = TrustDomain.parse("example.org")
    verified = validate(
        HybridJwtSvid(classical, signed.pqc_token), "a",
        jwt_bundles={td: jwks_bytes([SPIRE_JWT_KEY.public_jwk()])},
        pqc_jwt_bundles={td: PqcJwtBundle.parse(td, signed.pqc_jwt_bundle)},
        pqc_bundles=BundleSet.from_workload_api({"example.org": b"".join(signed.pqc_bundle)}),
    )  # fmt: skip
    assert str(verified.spiffe_id) == "spiffe://example.org/app"


@dataclass
class BundlePolicy(Policy):
    """The endpoint configuration FetchPQCBundle reads as well."""

    trust_domain: TrustDomain = field(default_factory=lambda: TrustDomain.parse("example.org"))
    revoked_intermediates: frozenset[str] = frozenset()


@pytest.mark.asyncio
async def test_the_bundle_refresh_carries_the_pqc_jwt_bundle(domain: Domain) -> None:
    """FetchPQCBundle (what agents poll for roots and revocations) brings the PQC JWT keys too."""
    with endpoint(domain, BundlePolicy()) as address:
        async with client(domain, address) as ca:
            update = await ca.fetch_bundle()
            signed = await ca.sign_jwt_svid(_token(SPIRE_JWT_KEY))
    td = TrustDomain.parse("example.org")
    assert update.trust_domain == "example.org" and update.pqc_bundle == signed.pqc_bundle
    keys = PqcJwtBundle.parse(td, update.pqc_jwt_bundle)
    assert len(keys) == 1 and keys == PqcJwtBundle.parse(td, signed.pqc_jwt_bundle)


@pytest.mark.asyncio
async def test_the_ca_signs_only_what_spire_signed_for_an_authorised_agent(domain: Domain) -> None:
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with endpoint(domain, Policy()) as address:
        async with client(domain, address) as ca:
            untrusted = RefusalReason.UNTRUSTED_SVID
            cases = {
                "signed by a key SPIRE does not have": (_token(JwtSigningKey.generate()), untrusted),
                "another trust domain's subject": (_token(SPIRE_JWT_KEY, "spiffe://other.org/app"), untrusted),
                "expired": (_token(SPIRE_JWT_KEY, now=an_hour_ago), untrusted),
                "not a JWS": ("not-a-token", RefusalReason.MALFORMED),
                "not ASCII": ("ä.b.c", RefusalReason.MALFORMED),
            }  # fmt: skip
            for name, (token, reason) in cases.items():
                with pytest.raises(IssuanceError) as info:
                    await ca.sign_jwt_svid(token)
                assert info.value.reason is reason, name
    with endpoint(domain, Policy(allowed=False)) as address:
        async with client(domain, address) as ca:
            with pytest.raises(IssuanceError) as info:
                await ca.sign_jwt_svid(_token(SPIRE_JWT_KEY))
            assert info.value.reason is RefusalReason.UNAUTHORIZED
    with endpoint(domain, Policy(), jwt=False) as address:
        async with client(domain, address) as ca:
            with pytest.raises(UnavailableError, match="does not sign JWT-SVIDs"):
                await ca.sign_jwt_svid(_token(SPIRE_JWT_KEY))


@pytest.mark.asyncio
async def test_an_agent_beyond_the_signing_rate_is_told_to_retry(domain: Domain) -> None:
    frozen = TokenBuckets(rate=0.001, burst=2, clock=lambda: 0.0)
    with endpoint(domain, Policy(), rate=frozen) as address:
        async with client(domain, address) as ca:
            for _ in range(2):
                await ca.sign_jwt_svid(_token(SPIRE_JWT_KEY))
            with pytest.raises(UnavailableError, match=r"RESOURCE_EXHAUSTED.*signing rate"):
                await ca.sign_jwt_svid(_token(SPIRE_JWT_KEY))


@pytest.mark.asyncio
async def test_spire_ha_a_token_either_server_signed_validates_at_an_agent_of_both(domain: Domain) -> None:
    """Two CA endpoints (SPIRE HA), each with its own intermediate under the one PQC root and so its
    own JWT signer: an agent listing both merges their keys at the bundle refresh, so a token signed by
    either validates there, whichever server answered it last."""
    td = TrustDomain.parse("example.org")
    hierarchy = domain.hierarchy
    key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    sibling = certs.build_intermediate(
        hierarchy.root, hierarchy.root_key, key.public_key(), td.name,
        not_before=now - dt.timedelta(minutes=1), not_after=now + dt.timedelta(days=1),
    )  # fmt: skip
    server_b = dataclasses.replace(
        domain,
        hierarchy=PQCHierarchy(
            hierarchy.root_key, hierarchy.root, IntermediateCA(key, sibling, (hierarchy.root,))
        ),
    )
    with endpoint(domain, BundlePolicy()) as address_a, endpoint(server_b, BundlePolicy()) as address_b:
        async with client(domain, address_a) as ca_a, client(domain, address_b) as ca_b:
            by_a = await ca_a.sign_jwt_svid(classical_a := _token(SPIRE_JWT_KEY))
            by_b = await ca_b.sign_jwt_svid(classical_b := _token(SPIRE_JWT_KEY))
            provisioner = PqcProvisioner(FailoverCAClient([("a", ca_a), ("b", ca_b)]))
            provisioner.note_bundles(td, pqc_jwt_bundle=by_a.pqc_jwt_bundle)  # A answered last
            assert len(provisioner.pqc_jwt_bundles()[td]) == 1
            provisioner.apply_bundle(await FailoverCAClient([("a", ca_a), ("b", ca_b)]).fetch_bundle())
            keys = provisioner.pqc_jwt_bundles()
    assert len(keys[td]) == 2
    for classical, signed in ((classical_a, by_a), (classical_b, by_b)):
        verified = validate(
            HybridJwtSvid(classical, signed.pqc_token), "a",
            jwt_bundles={td: jwks_bytes([SPIRE_JWT_KEY.public_jwk()])}, pqc_jwt_bundles=keys,
            pqc_bundles=BundleSet.from_certificates([hierarchy.root]),
        )  # fmt: skip
        assert str(verified.spiffe_id) == "spiffe://example.org/app"
