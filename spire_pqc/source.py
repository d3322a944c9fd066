"""The one thing channels, the CA client and the agent need from an identity: a :class:`HybridSource`.

A hybrid source answers three questions, each time it is asked: the hybrid SVID to present now, and
the classical and PQC bundles of a trust domain to verify a peer with now. Channels ask at every
handshake, so a long-running server follows SPIRE CA rotations and PQC root rotations without a
restart (go-spiffe's ``X509Source`` answers ``GetX509BundleForTrustDomain`` the same way). A trust
domain the source has no bundle for raises :class:`~spire_pqc.errors.UnknownTrustDomainError`,
never "trust anything".

Implemented by the SDK's live :class:`spire_pqc.workload.HybridX509Source`, the node agent's own
identity (its tunnels) and :class:`StaticHybridSource` (the dev trust domain, tests, one-shot tools).

Example::

    source = StaticHybridSource(svid, classical=BundleSet([...]), pqc=BundleSet([...]))
    source.get_pqc_bundle(TrustDomain("example.org")).authorities
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spire_pqc.bundle import BundleSource, X509Bundle
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import HybridSvid

__all__ = ["HybridSource", "StaticHybridSource", "classical_bundles_of", "pqc_bundles_of"]


class HybridSource(Protocol):
    """The current hybrid SVID and live per-trust-domain bundles (docs/architecture.md, "SDK")."""

    def get_hybrid_svid(self) -> HybridSvid:
        """The SVID to present now; raises UnavailableError while there is none."""
        ...

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """The classical (SPIRE) authorities of ``trust_domain`` now; UnknownTrustDomainError if none."""
        ...

    def get_pqc_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """The PQC (ML-DSA-65) authorities of ``trust_domain`` now; UnknownTrustDomainError if none."""
        ...


@dataclass(frozen=True, slots=True)
class StaticHybridSource:
    """A fixed hybrid SVID and fixed bundles: the dev trust domain, tests and one-shot tools."""

    svid: HybridSvid
    classical: BundleSource
    pqc: BundleSource

    def get_hybrid_svid(self) -> HybridSvid:
        return self.svid

    def get_classical_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.classical.get_bundle_for_trust_domain(trust_domain)

    def get_pqc_bundle(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.pqc.get_bundle_for_trust_domain(trust_domain)


@dataclass(frozen=True, slots=True)
class _ClassicalBundles:
    source: HybridSource

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.source.get_classical_bundle(trust_domain)


@dataclass(frozen=True, slots=True)
class _PqcBundles:
    source: HybridSource

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.source.get_pqc_bundle(trust_domain)


def classical_bundles_of(source: HybridSource) -> BundleSource:
    """A live view of the source's classical bundles, for the verification functions of svid.py."""
    return _ClassicalBundles(source)


def pqc_bundles_of(source: HybridSource) -> BundleSource:
    """A live view of the source's PQC bundles, for the verification functions of svid.py."""
    return _PqcBundles(source)
