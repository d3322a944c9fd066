"""A trust domain for JWT-SVID tests: PQC root + intermediate + JWT signer, and a classical JWT key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes
from spire_pqc.bundle import BundleSet, BundleSource, X509Bundle
from spire_pqc.ca.devca import PQCHierarchy
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, sign_pqc_part
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner


@dataclass
class Domain:
    """One trust domain's JWT-SVID material, as SPIRE + the plugin would hold it."""

    td: TrustDomain
    hierarchy: PQCHierarchy
    signer: TrustDomainSigner
    classical_key: JwtSigningKey

    @classmethod
    def generate(cls, name: str = "example.org") -> Domain:
        td = TrustDomain.parse(name)
        hierarchy = PQCHierarchy.generate(td)
        inter = hierarchy.intermediate
        signer = TrustDomainSigner.issue(inter.certificate, inter.key, td.name, ttl=dt.timedelta(hours=1))
        return cls(td, hierarchy, signer, JwtSigningKey.generate())

    def jwt_bundles(self) -> dict[TrustDomain, bytes]:
        return {self.td: jwks_bytes([self.classical_key.public_jwk()])}

    def pqc_jwt_bundles(self) -> dict[TrustDomain, PqcJwtBundle]:
        return {self.td: PqcJwtBundle.from_signers(self.td, [self.signer])}

    def pqc_bundles(self) -> BundleSet:
        return BundleSet([X509Bundle(self.td, [self.hierarchy.root])])

    def classical(self, path: str = "/me", audience: tuple[str, ...] = ("a",), ttl: int = 300) -> str:
        sid = SpiffeId.parse(f"spiffe://{self.td.name}{path}")
        return self.classical_key.sign(sid, list(audience), dt.timedelta(seconds=ttl))

    def hybrid(self, path: str = "/me", audience: tuple[str, ...] = ("a",), ttl: int = 300) -> HybridJwtSvid:
        return sign_pqc_part(
            self.classical(path, audience, ttl),
            self.signer,
            trust_domain=self.td,
            jwt_bundles=self.jwt_bundles(),
        )

    def validation_kwargs(self, pqc_jwt_bundles: Mapping[TrustDomain, PqcJwtBundle] | None = None) -> Bundles:
        """The bundles ``validate`` needs, optionally with other PQC JWT bundles."""
        return Bundles(
            jwt_bundles=self.jwt_bundles(),
            pqc_jwt_bundles=self.pqc_jwt_bundles() if pqc_jwt_bundles is None else pqc_jwt_bundles,
            pqc_bundles=self.pqc_bundles(),
        )


class Bundles(TypedDict):
    jwt_bundles: Mapping[TrustDomain, bytes]
    pqc_jwt_bundles: Mapping[TrustDomain, PqcJwtBundle]
    pqc_bundles: BundleSource
