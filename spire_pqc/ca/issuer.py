"""The intermediate PQC CA: checks an issue request against the policy, then issues.

Checks, in order (each refusal is an :class:`~spire_pqc.errors.IssuanceError` with a stable
``reason``): request shape and sizes (``malformed``) → freshness window (``stale``) → classical
chain against the trust domain's classical bundle and the SPIFFE leaf rules (``untrusted-svid``)
→ our own SvidBinding in the leaf (``binding``) → both proofs of possession (``bad-proof``) →
nonce replay (``replay``) → one issuance per classical SVID (``duplicate``, a security event).
Then the PQC SVID and the KEM certificate are issued with notAfter ≤ the classical SVID's.

The last two rules live in the :mod:`~spire_pqc.ca.ledger` database, which decides them atomically
(so they hold across threads, processes and SPIRE servers). Issuing is: record the nonce; if the
serial is already answered, answer from the ledger; else sign and *insert-or-read* the entry. Of two
racing requests for one serial exactly one entry is stored and both get it back: the same keys get
the same certificates, other keys get ``duplicate``. A ledger that cannot answer refuses with
``unavailable`` (fail closed): nothing is signed that the ledger did not record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.bundle import BundleSource
from spire_pqc.ca.ledger import MEMORY, IssuanceLedger, LedgerEntry, open_ledger
from spire_pqc.ca.request import (
    MAX_CERT_BYTES,
    MAX_CHAIN_CERTS,
    NONCE_MAX,
    NONCE_MIN,
    IssueRequest,
    IssueResponse,
    verify_classical,
)
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PublicKey
from spire_pqc.errors import (
    InvalidKeyError,
    InvalidSignatureError,
    IssuanceError,
    LedgerError,
    ParseError,
    RefusalReason,
    VerificationError,
)
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.svid import verify_classical_svid, verify_svid_binding
from spire_pqc.x509 import certs
from spire_pqc.x509.load import load_der_certificate

log = logging.getLogger(__name__)

DEFAULT_FRESHNESS = dt.timedelta(seconds=60)
DEFAULT_MAX_TTL = dt.timedelta(hours=24)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class IntermediateCA:
    """The CA's signing identity: key, certificate, and the chain up to (and including) the root."""

    key: MLDSA65PrivateKey
    certificate: x509.Certificate
    chain_to_root: tuple[x509.Certificate, ...]  # [root] normally; may include a cross-certificate

    def __post_init__(self) -> None:
        if certs.mldsa_public_key(self.certificate) != self.key.public_key():
            raise InvalidKeyError("intermediate PQC CA key does not match its certificate")

    @property
    def public_key(self) -> MLDSA65PublicKey:
        return self.key.public_key()


@dataclass(frozen=True)
class Issued:
    response: IssueResponse
    spiffe_id: str
    reissued: bool
    renewed: bool = False  # the same keys certified again (their previous certificates were ending)


class PQCIssuer:
    """Checks and answers issue requests for one trust domain (thread-safe)."""

    def __init__(
        self,
        ca: IntermediateCA,
        trust_domain: TrustDomain,
        classical_bundles: BundleSource,
        *,
        trusted_binding_keys: Sequence[MLDSA65PublicKey] = (),
        sibling_intermediates: Sequence[x509.Certificate] = (),
        revoked: Collection[str] = (),
        pqc_roots: Sequence[x509.Certificate] = (),
        ledger: IssuanceLedger | None = None,
        freshness: dt.timedelta = DEFAULT_FRESHNESS,
        max_ttl: dt.timedelta = DEFAULT_MAX_TTL,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._ca = ca
        self._trust_domain = trust_domain
        self._bundles = classical_bundles
        # Bindings made by sibling intermediates (SPIRE HA: one plugin instance each) are ours too.
        # When a sibling made the binding, its certificate is appended to the chains we return, so a
        # verifier holding only the PQC root can check that binding (svid.verify_hybrid_svid).
        # Revoked intermediates (key ids, hex) are never binding signers, whatever else trusts them.
        self.revoked = frozenset(k.lower() for k in revoked)
        encode = serialization.Encoding.DER
        self._siblings = {
            key: c.public_bytes(encode)
            for c in sibling_intermediates
            if (key := certs.mldsa_public_key(c)).key_id().hex() not in self.revoked
        }
        self._binding_keys = [
            k
            for k in (ca.public_key, *trusted_binding_keys, *self._siblings)
            if k.key_id().hex() not in self.revoked
        ]
        # What every response repeats, encoded once.
        self._intermediate_der = ca.certificate.public_bytes(encode)
        # Without a ledger: a private in-memory database (the rules then hold in this process only).
        self._ledger = ledger if ledger is not None else open_ledger(MEMORY)
        self._freshness = freshness
        self._max_ttl = max_ttl
        self._clock = clock
        self._key_id = ca.public_key.key_id().hex()
        # Every root of the trust domain's PQC bundle (a rotation's new root included), else the CA's own.
        self.pqc_roots = tuple(pqc_roots) or tuple(c for c in ca.chain_to_root if _self_signed(c))
        self._roots_der = tuple(c.public_bytes(encode) for c in self.pqc_roots)

    @property
    def trust_domain(self) -> TrustDomain:
        return self._trust_domain

    @property
    def ca(self) -> IntermediateCA:
        return self._ca

    @property
    def ledger(self) -> IssuanceLedger:
        return self._ledger

    def issue(self, request: IssueRequest) -> Issued:
        now = self._clock()
        leaf, chain = self._parse(request)
        self._check_freshness(request, now)
        spiffe_id, binder = self._check_classical(leaf, chain, now)
        mldsa_key, mlkem_key = self._check_keys(request, spiffe_id)
        self._check_proofs(request, leaf, mldsa_key, spiffe_id)
        serial_key = f"{leaf.issuer.rfc4514_string()}|{leaf.serial_number:x}"
        fingerprint = hashlib.sha256(request.mldsa_spki + request.mlkem_spki).hexdigest()
        try:
            # A nonce needs remembering while a request carrying it could still be fresh at any
            # server: its timestamp is within the window of now, and servers' clocks differ a little.
            if not self._ledger.use_nonce(request.nonce, expires=now + 2 * self._freshness):
                raise IssuanceError(
                    "nonce already used (replayed request)", reason=RefusalReason.REPLAY, spiffe_id=spiffe_id
                )
            stored = self._ledger.lookup(serial_key, now=now)
            if stored is None:
                response = self._issue(
                    leaf, request.classical_chain[0], spiffe_id, mldsa_key, mlkem_key, now, binder
                )
                entry = LedgerEntry(
                    serial_key=serial_key,
                    keys_fingerprint=fingerprint,
                    spiffe_id=spiffe_id,
                    issuer_key_id=self._key_id,
                    issued=now,
                    expires=leaf.not_valid_after_utc + self._freshness,
                    response=response,
                )
                stored = self._ledger.record(entry)
                if stored is entry:
                    log.info(
                        "issued PQC SVID and KEM certificate for %s (until %s)",
                        spiffe_id,
                        leaf.not_valid_after_utc.isoformat(),
                    )
                    return Issued(response, spiffe_id, reissued=False)
        except LedgerError as exc:
            raise IssuanceError(str(exc), reason=RefusalReason.UNAVAILABLE, spiffe_id=spiffe_id) from exc
        if stored.keys_fingerprint == fingerprint:
            if not _renewal_due(stored, leaf, now) and stored.issuer_key_id not in self.revoked:
                return Issued(stored.response, spiffe_id, reissued=True)
            # The same keys for the same classical SVID, past half of their certificates' shorter life
            # (max_pqc_ttl or the intermediate's end): certify them again. The one-key-set-per-SVID
            # rule is unchanged; the ledger keeps the first answer (a retry of a lost renewal renews).
            response = self._issue(
                leaf, request.classical_chain[0], spiffe_id, mldsa_key, mlkem_key, now, binder
            )
            log.info("renewed the PQC SVID and KEM certificate of %s (same keys)", spiffe_id)
            return Issued(response, spiffe_id, reissued=False, renewed=True)
        log.warning(
            "security event: second PQC issuance with different keys refused for %s "
            "(classical SVID serial %x, first answered by intermediate %s at %s)",
            spiffe_id,
            leaf.serial_number,
            stored.issuer_key_id[:16],
            stored.issued.isoformat(),
        )
        raise IssuanceError(
            "this classical SVID already obtained PQC credentials for other keys",
            reason=RefusalReason.DUPLICATE,
            spiffe_id=spiffe_id,
        )

    # --- checks --------------------------------------------------------------------------------

    def _parse(self, request: IssueRequest) -> tuple[x509.Certificate, list[x509.Certificate]]:
        if not request.classical_chain or len(request.classical_chain) > MAX_CHAIN_CERTS:
            raise IssuanceError(
                f"classical chain must have 1..{MAX_CHAIN_CERTS} certificates", reason=RefusalReason.MALFORMED
            )
        if not NONCE_MIN <= len(request.nonce) <= NONCE_MAX:
            raise IssuanceError(
                f"nonce must be {NONCE_MIN}..{NONCE_MAX} bytes", reason=RefusalReason.MALFORMED
            )
        parsed = []
        for index, raw in enumerate(request.classical_chain):
            if len(raw) > MAX_CERT_BYTES:
                raise IssuanceError(
                    f"certificate {index} exceeds {MAX_CERT_BYTES} bytes", reason=RefusalReason.MALFORMED
                )
            # One loader for certificates from outside: it refuses an unknown version (InvalidVersion
            # is not a ValueError), a serial that is not positive and any part that does not parse.
            try:
                parsed.append(load_der_certificate(raw, what=f"certificate {index} is not DER X.509"))
            except ParseError as exc:
                raise IssuanceError(str(exc), reason=RefusalReason.MALFORMED) from exc
        return parsed[0], parsed

    def _check_freshness(self, request: IssueRequest, now: dt.datetime) -> None:
        # Compare integer milliseconds: the wire carries any int64, and a datetime built from a
        # timestamp outside years 1..9999 raises ValueError instead of refusing the request.
        now_ms = (now - _EPOCH) // dt.timedelta(milliseconds=1)
        skew_ms = abs(now_ms - request.timestamp_ms)
        if skew_ms > self._freshness / dt.timedelta(milliseconds=1):
            raise IssuanceError(
                f"request timestamp is {skew_ms // 1000}s from the CA clock (window "
                f"{self._freshness.total_seconds():.0f}s)",
                reason=RefusalReason.STALE,
            )

    def _check_classical(
        self, leaf: x509.Certificate, chain: list[x509.Certificate], now: dt.datetime
    ) -> tuple[str, MLDSA65PublicKey]:
        """The SVID's SPIFFE ID and the intermediate key that made its binding."""
        try:
            spiffe_id = verify_classical_svid(chain, self._bundles, at=now)
        except VerificationError as exc:
            raise IssuanceError(
                f"classical SVID rejected: {exc}",
                reason=RefusalReason.UNTRUSTED_SVID,
                spiffe_id=exc.spiffe_id,
            ) from exc
        if spiffe_id.trust_domain != self._trust_domain:
            raise IssuanceError(
                f"SVID of trust domain {spiffe_id.trust_domain}; this CA serves {self._trust_domain}",
                reason=RefusalReason.UNTRUSTED_SVID,
                spiffe_id=str(spiffe_id),
            )
        try:
            signer = verify_svid_binding(leaf, self._binding_keys)
        except VerificationError as exc:
            raise IssuanceError(
                f"SvidBinding: {exc}", reason=RefusalReason.BINDING, spiffe_id=str(spiffe_id)
            ) from exc
        return str(spiffe_id), signer

    def _check_keys(
        self, request: IssueRequest, spiffe_id: str
    ) -> tuple[MLDSA65PublicKey, MLKEM768PublicKey]:
        try:
            return MLDSA65PublicKey.from_spki(request.mldsa_spki), MLKEM768PublicKey.from_spki(
                request.mlkem_spki
            )
        except InvalidKeyError as exc:
            raise IssuanceError(
                f"PQC public key rejected: {exc}", reason=RefusalReason.MALFORMED, spiffe_id=spiffe_id
            ) from exc

    def _check_proofs(
        self, request: IssueRequest, leaf: x509.Certificate, mldsa_key: MLDSA65PublicKey, spiffe_id: str
    ) -> None:
        from spire_pqc.ca.request import CONTEXT

        tbs = request.to_be_signed()
        if not verify_classical(leaf.public_key(), request.classical_proof, tbs):
            raise IssuanceError(
                "classical proof does not verify with the SVID key",
                reason=RefusalReason.BAD_PROOF,
                spiffe_id=spiffe_id,
            )
        try:
            mldsa_key.verify(request.mldsa_proof, tbs, context=CONTEXT)
        except InvalidSignatureError as exc:
            raise IssuanceError(
                "ML-DSA-65 proof does not verify with the new key",
                reason=RefusalReason.BAD_PROOF,
                spiffe_id=spiffe_id,
            ) from exc

    # --- issuance ------------------------------------------------------------------------------

    def _issue(
        self,
        leaf: x509.Certificate,
        leaf_der: bytes,  # the DER ``leaf`` was parsed from (RelatedCertificate hashes these bytes)
        spiffe_id: str,
        mldsa_key: MLDSA65PublicKey,
        mlkem_key: MLKEM768PublicKey,
        now: dt.datetime,
        binder: MLDSA65PublicKey,
    ) -> IssueResponse:
        ca = self._ca
        not_before = now - dt.timedelta(seconds=30)  # tolerate small clock skew at verifiers
        not_after = min(leaf.not_valid_after_utc, ca.certificate.not_valid_after_utc, now + self._max_ttl)
        td = str(self._trust_domain)
        pqc = certs.build_pqc_svid(
            ca.certificate, ca.key, mldsa_key, spiffe_id,
            trust_domain=td, classical_leaf_der=leaf_der, not_before=not_before, not_after=not_after,
        )  # fmt: skip
        kem = certs.build_kem_certificate(
            ca.certificate, ca.key, mlkem_key, spiffe_id,
            trust_domain=td, classical_leaf_der=leaf_der, not_before=not_before, not_after=not_after,
        )  # fmt: skip
        encode = serialization.Encoding.DER
        intermediates: tuple[bytes, ...] = (self._intermediate_der,)
        sibling = self._siblings.get(binder)
        if sibling is not None:
            intermediates += (sibling,)
        return IssueResponse(
            pqc_svid_chain=(pqc.public_bytes(encode), *intermediates),
            kem_certificate_chain=(kem.public_bytes(encode), *intermediates),
            pqc_bundle=self._roots_der,
        )


def _renewal_due(stored: LedgerEntry, leaf: x509.Certificate, now: dt.datetime) -> bool:
    """The stored certificates end before the classical SVID and half of their life has passed."""
    try:
        pqc_end = load_der_certificate(
            stored.response.pqc_svid_chain[0], what="stored PQC SVID"
        ).not_valid_after_utc
    except (ParseError, IndexError):
        return True  # an unreadable stored answer is never sent again
    if pqc_end >= leaf.not_valid_after_utc:
        return False
    return now >= stored.issued + (pqc_end - stored.issued) / 2


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject
