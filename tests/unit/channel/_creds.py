"""Credentials for channel tests, minted the production way: a dev classical CA that attaches the
SvidBinding (like SPIRE + our composer), then a real issue request answered by PQCIssuer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cryptography import x509

from spire_pqc.bundle import BundleSet, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.request import build_request
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.source import StaticHybridSource
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.svid import HybridSvid, der


@dataclass
class TrustDomainCA:
    """One trust domain: classical dev CA, PQC root + intermediate, issuer, and its two bundles."""

    trust_domain: TrustDomain
    hierarchy: PQCHierarchy = field(init=False)
    classical: DevClassicalCA = field(init=False)
    issuer: PQCIssuer = field(init=False)

    def __post_init__(self) -> None:
        self.hierarchy = PQCHierarchy.generate(self.trust_domain)
        self.classical = DevClassicalCA(self.trust_domain, self.hierarchy.intermediate.key)
        self.issuer = PQCIssuer(
            self.hierarchy.intermediate,
            self.trust_domain,
            BundleSet.from_certificates([self.classical.certificate]),
        )

    @property
    def classical_bundle(self) -> X509Bundle:
        return X509Bundle(self.trust_domain, [self.classical.certificate])

    @property
    def pqc_bundle(self) -> X509Bundle:
        return X509Bundle(self.trust_domain, [self.hierarchy.root])

    def mint(self, path: str) -> HybridSvid:
        spiffe_id = SpiffeId.from_parts(self.trust_domain, path)
        leaf, key = self.classical.issue_svid(spiffe_id)
        mldsa, mlkem = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
        request = build_request(
            (der(leaf),), key, mldsa, mlkem.public_key().spki(), timestamp_ms=int(time.time() * 1000)
        )
        response = self.issuer.issue(request).response
        load = x509.load_der_x509_certificate
        return HybridSvid(
            spiffe_id=spiffe_id,
            classical_chain=(leaf,),
            classical_key=key,
            pqc_chain=tuple(load(c) for c in response.pqc_svid_chain),
            pqc_key=mldsa,
            kem_chain=tuple(load(c) for c in response.kem_certificate_chain),
            kem_key=mlkem,
        )


@dataclass
class World:
    """Two trust domains (``example.org`` and ``other.org``) and their bundle sets."""

    main: TrustDomainCA
    other: TrustDomainCA

    @property
    def classical_bundles(self) -> BundleSet:
        return BundleSet([self.main.classical_bundle, self.other.classical_bundle])

    @property
    def pqc_bundles(self) -> BundleSet:
        return BundleSet([self.main.pqc_bundle, self.other.pqc_bundle])

    def source(self, svid: HybridSvid) -> StaticHybridSource:
        """``svid`` with both trust domains' bundles: what a channel end is given."""
        return StaticHybridSource(svid, self.classical_bundles, self.pqc_bundles)


def make_world() -> World:
    return World(
        TrustDomainCA(TrustDomain.parse("example.org")), TrustDomainCA(TrustDomain.parse("other.org"))
    )
