"""Trust domains for federation tests: PQC roots that rotate, signers, and a classical server SVID."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from spire_pqc.bundle import BundleSet, SpiffeBundle, X509Bundle
from spire_pqc.ca.devca import DevClassicalCA, PQCHierarchy
from spire_pqc.federation.document import SignedBundle, sign_bundle
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner


def signer_of(hierarchy: PQCHierarchy, td: TrustDomain) -> TrustDomainSigner:
    inter = hierarchy.intermediate
    return TrustDomainSigner.issue(inter.certificate, inter.key, td.name, ttl=dt.timedelta(hours=1))


@dataclass
class RemoteDomain:
    """A remote trust domain: its current PQC hierarchy (rotatable) and SPIRE-like classical CA."""

    td: TrustDomain
    hierarchies: list[PQCHierarchy]
    classical_ca: DevClassicalCA
    sequence: int = 0
    served: SignedBundle | None = field(default=None, repr=False)

    @classmethod
    def generate(cls, name: str = "b.org") -> RemoteDomain:
        td = TrustDomain.parse(name)
        return cls(td, [PQCHierarchy.generate(td)], DevClassicalCA(td, None))

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return tuple(h.root for h in self.hierarchies)

    @property
    def active(self) -> PQCHierarchy:
        return self.hierarchies[-1]

    def publish(self, *, refresh_hint: int | None = 1, sign_with: PQCHierarchy | None = None) -> SignedBundle:
        """A new document (next sequence number) of the current roots, signed under ``sign_with``."""
        self.sequence += 1
        bundle = SpiffeBundle(self.td, self.roots, {}, self.sequence, refresh_hint)
        self.served = sign_bundle(bundle, signer_of(sign_with or self.active, self.td))
        return self.served

    def rotate(self) -> PQCHierarchy:
        """Add a new root (published beside the old one); :meth:`retire_first` drops the old one."""
        new = PQCHierarchy.generate(self.td)
        self.hierarchies.append(new)
        return new

    def retire_first(self) -> None:
        self.hierarchies.pop(0)

    def server_svid(self) -> tuple[list[x509.Certificate], object]:
        cert, key = self.classical_ca.issue_svid(self.endpoint_id)
        return [cert], key

    @property
    def endpoint_id(self) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://{self.td.name}/spire/server")

    def classical_bundles(self) -> BundleSet:
        return BundleSet([X509Bundle(self.td, [self.classical_ca.certificate])])
