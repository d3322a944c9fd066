"""Trust-domain signers: who signs the PQC parts of JWT-SVIDs (docs/pq-jwt.md).

Each intermediate PQC CA certifies a signer (:class:`~spire_pqc.x509.signer.TrustDomainSigner`); its key
lives only in the CA process's memory. :class:`SignerSource` is all a CA needs: the signer to
sign with now, and every signer a verifier must know (the PQC JWT bundle). :class:`IntermediateSigners`
serves it for one intermediate: it re-issues the signer before it expires and keeps the previous one
published until its certificate ends, so a token signed just before a re-issue still validates.
Intermediate rotation (next / active / retiring intermediates) feeds another SignerSource with the
signers of each.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import sign_pqc_part
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner

__all__ = ["IntermediateSigners", "JwtSigning", "SignerSource", "jwt_bundle_of"]

#: Lifetime of a signer certificate (capped by the intermediate's).
SIGNER_TTL = dt.timedelta(hours=24)
#: A signer is replaced when less than this is left of it: more than any JWT-SVID lives (SPIRE's
#: default is 5 minutes), so a token never outlives the certificate of the key that signed it.
RENEW_BEFORE = dt.timedelta(hours=2)


class SignerSource(Protocol):
    def active(self) -> TrustDomainSigner:
        """The signer to sign with now."""
        ...

    def published(self) -> Sequence[TrustDomainSigner]:
        """Every signer whose tokens or documents a verifier must accept now (next, active, retiring)."""
        ...


def jwt_bundle_of(trust_domain: TrustDomain, signers: SignerSource) -> PqcJwtBundle:
    """The trust domain's PQC JWT bundle: the published signers' keys with their chains."""
    return PqcJwtBundle.from_signers(trust_domain, signers.published())


class IntermediateSigners:
    """The signer of one intermediate, re-issued before it expires; thread-safe."""

    def __init__(
        self,
        intermediate: IntermediateCA,
        trust_domain: TrustDomain,
        *,
        ttl: dt.timedelta = SIGNER_TTL,
        renew_before: dt.timedelta = RENEW_BEFORE,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._intermediate = intermediate
        self._trust_domain = trust_domain
        self._ttl = ttl
        self._renew_before = renew_before
        self._clock = clock
        self._lock = threading.Lock()
        self._current = self._issue()
        self._previous: TrustDomainSigner | None = None

    def _issue(self) -> TrustDomainSigner:
        return TrustDomainSigner.issue(
            self._intermediate.certificate,
            self._intermediate.key,
            self._trust_domain.name,
            ttl=self._ttl,
            now=self._clock(),
        )

    def _refresh(self) -> None:
        now = self._clock()
        if self._previous is not None and self._previous.not_after <= now:
            self._previous = None
        left = self._current.not_after - now
        # An intermediate close to its own end caps the signer: re-issuing then would not help.
        capped = self._current.not_after >= self._intermediate.certificate.not_valid_after_utc
        if left < self._renew_before and not capped:
            self._previous, self._current = self._current, self._issue()

    def active(self) -> TrustDomainSigner:
        with self._lock:
            self._refresh()
            return self._current

    def published(self) -> Sequence[TrustDomainSigner]:
        with self._lock:
            self._refresh()
            return tuple(s for s in (self._current, self._previous) if s is not None)


@dataclass(frozen=True)
class JwtSigning:
    """What the CA endpoint signs JWT-SVIDs with: the trust domain, its signers and its PQC roots."""

    trust_domain: TrustDomain
    signers: SignerSource
    pqc_roots: tuple[x509.Certificate, ...]

    def jwks(self) -> bytes:
        """The trust domain's PQC JWT bundle as a JWK Set."""
        return jwt_bundle_of(self.trust_domain, self.signers).to_jwks()

    def roots_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.pqc_roots]

    def sign(self, classical_token: str, jwt_bundle: bytes) -> str:
        """The PQC part for ``classical_token``, once it verifies under ``jwt_bundle`` (the trust
        domain's classical JWT bundle). Raises a VerificationError subclass otherwise."""
        td = self.trust_domain
        hybrid = sign_pqc_part(
            classical_token, self.signers.active(), trust_domain=td, jwt_bundles={td: jwt_bundle}
        )
        return hybrid.pqc
