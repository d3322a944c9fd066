"""Trust-domain signers: who signs the PQC parts of JWT-SVIDs (docs/pq-jwt.md).

Each intermediate PQC CA certifies a signer (:class:`~spire_pqc.x509.signer.TrustDomainSigner`); its key
lives only in the CA process's memory. :class:`SignerSource` is all a CA needs: the signer to
sign with now, and every signer a verifier must know (the PQC JWT bundle). :class:`IntermediateSigners`
serves it for one intermediate: it re-issues the signer before it expires and keeps the previous one
published until its certificate ends, so a token signed just before a re-issue still validates.
:class:`ScheduleSigners` follows the intermediate schedule (:mod:`spire_pqc.ca.intermediates`): the
signers of the *next*, *active* and *retiring* intermediates are published (a successor's key reaches
verifiers before it signs), the active one's signs, a superseded one stays published until the last
token it signed has expired, and a *revoked* intermediate's signers are dropped at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.ca.intermediates import Intermediate, IntermediateSet, State
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ConfigError, SpirePqcError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import claimed_expiry, sign_pqc_part
from spire_pqc.jwtsvid.jws import AkpPublicJwk
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner

__all__ = ["IntermediateSigners", "JwtSigning", "ScheduleSigners", "SignerSource", "jwt_bundle_of"]

log = logging.getLogger(__name__)

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

    def signed(self, signer: TrustDomainSigner, until: dt.datetime) -> None:
        """``signer`` signed a token valid until ``until``: keep it published that long."""
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

    def signed(self, signer: TrustDomainSigner, until: dt.datetime) -> None:
        """Nothing to record: a replaced signer stays published until its certificate ends, and it was
        replaced RENEW_BEFORE (more than any JWT-SVID lives) before that."""

    def current_signers(self) -> tuple[TrustDomainSigner, ...]:
        """The signers now, without re-issuing one (for an intermediate that no longer signs)."""
        with self._lock:
            return tuple(s for s in (self._current, self._previous) if s is not None)


def _kid(signer: TrustDomainSigner) -> str:
    return AkpPublicJwk(signer.key.public_key()).thumbprint()


class ScheduleSigners:
    """The signers of an intermediate schedule; thread-safe (module docstring).

    ``schedule`` returns the schedule now (the plugin's IntermediateWatcher.current); ``key_of`` the
    intermediate's key as it is on disk now (a removed key file stops its signer being certified).
    Each intermediate gets its :class:`IntermediateSigners` the first time it is seen *next*, *active* or
    *retiring*; it is forgotten once *retired* and no token it signed is still valid, or at once when
    *revoked*."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        schedule: Callable[[], IntermediateSet],
        key_of: Callable[[Intermediate], MLDSA65PrivateKey],
        *,
        ttl: dt.timedelta = SIGNER_TTL,
        renew_before: dt.timedelta = RENEW_BEFORE,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.trust_domain = trust_domain
        self._schedule = schedule
        self._key_of = key_of
        self._ttl = ttl
        self._renew_before = renew_before
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, IntermediateSigners] = {}  # by intermediate key id
        # Signers of intermediates that stopped being published, kept while a token they signed lives.
        self._draining: dict[str, tuple[TrustDomainSigner, ...]] = {}
        self._until: dict[str, dt.datetime] = {}  # signer kid -> expiry of the last token it signed
        self._failed: set[str] = set()

    def _signers_of(self, inter: Intermediate) -> IntermediateSigners | None:
        holder = self._live.get(inter.key_id)
        if holder is None:
            try:
                ca = IntermediateCA(self._key_of(inter), inter.ca.certificate, inter.ca.chain_to_root)
                holder = IntermediateSigners(
                    ca, self.trust_domain, ttl=self._ttl, renew_before=self._renew_before, clock=self._clock
                )
            except SpirePqcError as exc:  # its key is gone or was replaced: it certifies no signer
                if inter.key_id not in self._failed:
                    self._failed.add(inter.key_id)
                    log.error("intermediate %s certifies no JWT signer: %s", inter.key_id[:16], exc)  # noqa: TRY400
                return None
            self._failed.discard(inter.key_id)
            self._live[inter.key_id] = holder
            log.info(
                "JWT signer of intermediate %s: key %s", inter.key_id[:16], _kid(holder.current_signers()[0])
            )
        return holder

    def _sync(self) -> tuple[IntermediateSigners | None, list[IntermediateSigners]]:
        """(the active intermediate's signers, every published intermediate's), under the lock."""
        current = self._schedule()
        now = self._clock()
        published = {e.key_id: e for e in current.in_state(State.NEXT, State.ACTIVE, State.RETIRING)}
        revoked = {e.key_id for e in current.in_state(State.REVOKED)}
        for key_id in [k for k in self._live if k not in published]:
            holder = self._live.pop(key_id)
            if key_id not in revoked:
                self._draining[key_id] = holder.current_signers()
        for key_id in revoked:
            if self._draining.pop(key_id, None) is not None or key_id in self._live:
                log.warning("intermediate %s is revoked: its JWT signers are withdrawn", key_id[:16])
        for key_id, signers in list(self._draining.items()):
            kept = tuple(s for s in signers if now < min(self._until.get(_kid(s), now), s.not_after))
            if kept:
                self._draining[key_id] = kept
            else:
                del self._draining[key_id]
        for kid in [k for k, until in self._until.items() if until <= now]:
            del self._until[kid]
        holders = [h for e in published.values() if (h := self._signers_of(e.intermediate)) is not None]
        active = current.active
        return (self._live.get(active.key_id) if active is not None else None), holders

    def active(self) -> TrustDomainSigner:
        with self._lock:
            active, _ = self._sync()
        if active is None:
            raise ConfigError(
                ["no intermediate PQC CA is active (expired, revoked, not yet valid or its key is missing)"],
                source="spire-pqc",
            )
        return active.active()

    def published(self) -> Sequence[TrustDomainSigner]:
        with self._lock:
            _, holders = self._sync()
            draining = [s for signers in self._draining.values() for s in signers]
        found: dict[str, TrustDomainSigner] = {}
        for signer in [*(s for h in holders for s in h.published()), *draining]:
            found.setdefault(_kid(signer), signer)
        return tuple(found.values())

    def signed(self, signer: TrustDomainSigner, until: dt.datetime) -> None:
        kid = _kid(signer)
        with self._lock:
            if until > self._until.get(kid, until - dt.timedelta(seconds=1)):
                self._until[kid] = until


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
        domain's classical JWT bundle). Raises a VerificationError subclass otherwise, ConfigError when
        no intermediate can sign now."""
        td = self.trust_domain
        signer = self.signers.active()
        hybrid = sign_pqc_part(classical_token, signer, trust_domain=td, jwt_bundles={td: jwt_bundle})
        self.signers.signed(signer, claimed_expiry(classical_token))
        return hybrid.pqc
