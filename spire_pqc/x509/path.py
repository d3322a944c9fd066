"""Path validation of ML-DSA-65 certificate chains (PQC SVIDs, KEM certificates, intermediates).

The path is *built*, not read off the presented order: for each certificate, every trust anchor
and every other presented certificate whose subject equals its issuer name, and whose
SubjectKeyIdentifier (when both sides carry one) equals its AuthorityKeyIdentifier, is a candidate
issuer, tried by signature. A classical anchor with the same subject as the PQC root, a retired
root under the same name, a decoy intermediate or a presented chain in any order therefore never
hides a valid path.

The search is bounded so a crafted bundle or chain cannot make it expensive: the path holds at most
``max_intermediates`` intermediates, a presented chain at most :data:`MAX_PRESENTED` certificates
besides the leaf, each certificate is used once per path, each (certificate, issuer) signature is
checked once, and the whole validation stops after :data:`MAX_SIGNATURE_CHECKS` ML-DSA-65 signature
checks.

When no path exists, the error is the most specific one found: a candidate that did sign but
breaks a CA rule (expired, not a CA, no keyCertSign, path length), else a signature that does not
verify, else why the candidates were unusable, else "does not lead to the bundle".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.crypto.mldsa import MLDSA65PublicKey
from spire_pqc.errors import (
    ChainError,
    KeyUsageError,
    MalformedCredentialError,
    ParseError,
    SpirePqcError,
    VerificationError,
)
from spire_pqc.x509.certs import check_mldsa_signature, check_validity, mldsa_public_key
from spire_pqc.x509.load import CRYPTOGRAPHY_PARSE_ERRORS, check_parsed
from spire_pqc.x509.memo import MEMO
from spire_pqc.x509.oids import ML_DSA_65

#: Certificates of a presented chain considered besides the leaf (extra ones are allowed, unused).
MAX_PRESENTED = 8
#: ML-DSA-65 signature checks one validation may make (about 0.1 ms each) before it gives up.
MAX_SIGNATURE_CHECKS = 32


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class _Candidate:
    """A certificate that may have issued another: a trust anchor or a presented certificate.

    Its parts are parsed on first use and every failure becomes ``problem``, so a certificate that
    cannot issue anything (unparseable, not ML-DSA-65) is skipped with a reason, never raised from.
    """

    def __init__(self, cert: x509.Certificate, where: str, *, anchor: bool) -> None:
        self.cert = cert
        self.where = where
        self.anchor = anchor
        self._key: MLDSA65PublicKey

    @functools.cached_property
    def subject(self) -> x509.Name | None:
        try:
            return self.cert.subject
        except CRYPTOGRAPHY_PARSE_ERRORS:
            return None

    @functools.cached_property
    def key_id(self) -> bytes | None:
        try:
            return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            return None
        except CRYPTOGRAPHY_PARSE_ERRORS:
            return None  # ``problem`` reports the broken extensions

    @functools.cached_property
    def problem(self) -> str | None:
        try:
            check_parsed(self.cert, what=self.where)
        except ParseError as exc:
            return str(exc)
        if self.cert.public_key_algorithm_oid != ML_DSA_65:
            return f"{self.where} has a {self.cert.public_key_algorithm_oid.dotted_string} key, not ML-DSA-65"
        try:
            self._key = mldsa_public_key(self.cert)
        except SpirePqcError as exc:
            return f"{self.where}: {exc}"
        return None

    @property
    def key(self) -> MLDSA65PublicKey:
        """The ML-DSA-65 key; only read after ``problem`` was found to be None."""
        return self._key

    def describe(self) -> str:
        try:
            name = self.cert.subject.rfc4514_string()
        except CRYPTOGRAPHY_PARSE_ERRORS:
            name = "unparseable subject"
        return f"{self.where} ({name})"


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


class _PathSearch:
    def __init__(
        self,
        candidates: list[_Candidate],
        *,
        at: dt.datetime,
        spiffe_id: str | None,
        max_intermediates: int,
    ) -> None:
        self._candidates = candidates
        self._at = at
        self._spiffe_id = spiffe_id
        self._max_intermediates = max_intermediates
        self._signatures: dict[tuple[int, int], bool] = {}
        self._checks = 0
        self._refusals: list[VerificationError] = []
        self._bad_signatures: list[str] = []
        self._unusable: list[str] = []

    def _issuers(self, cert: x509.Certificate) -> list[tuple[int, _Candidate]]:
        """Candidates named as ``cert``'s issuer: anchors first, exact key-id matches first."""
        issuer, authority_key_id = cert.issuer, _authority_key_id(cert)
        found = []
        for index, candidate in enumerate(self._candidates):
            if candidate.subject is None and candidate.problem is not None:
                self._unusable.append(candidate.problem)  # its name does not parse: cannot match
            if candidate.subject != issuer:
                continue
            known = authority_key_id is not None and candidate.key_id is not None
            if known and candidate.key_id != authority_key_id:
                continue  # another key under the same name: a rotated root, or a decoy
            found.append((not candidate.anchor, not known, index, candidate))
        found.sort(key=lambda item: item[:3])
        return [(index, candidate) for _, _, index, candidate in found]

    def _signed_by(self, cert: x509.Certificate, cert_id: int, index: int, candidate: _Candidate) -> bool:
        memo = (cert_id, index)
        if memo not in self._signatures:
            self._checks += 1
            if self._checks > MAX_SIGNATURE_CHECKS:
                raise ChainError(
                    f"path search stopped after {MAX_SIGNATURE_CHECKS} signature checks "
                    "(too many candidate issuers with the same name)",
                    spiffe_id=self._spiffe_id,
                )
            self._signatures[memo] = MEMO.verified(
                cert,
                candidate.key,
                purpose="certificate",
                expires=cert.not_valid_after_utc,
                check=functools.partial(check_mldsa_signature, cert, candidate.key),
            )
            if not self._signatures[memo]:
                self._bad_signatures.append(candidate.describe())
        return self._signatures[memo]

    def find(
        self, cert: x509.Certificate, cert_id: int, depth: int, used: frozenset[int]
    ) -> list[x509.Certificate] | None:
        """A path from ``cert`` (whose ``depth`` CA certificates below are already on the path)
        up to a trust anchor, without the certificates in ``used``; None if there is none."""
        for index, candidate in self._issuers(cert):
            if index in used:
                continue
            if candidate.problem is not None:
                self._unusable.append(candidate.problem)
                continue
            if not self._signed_by(cert, cert_id, index, candidate):
                continue
            role = "PQC root" if candidate.anchor else "PQC intermediate CA"
            try:
                _check_ca(candidate.cert, depth, self._at, self._spiffe_id, role=role)
            except VerificationError as exc:
                self._refusals.append(exc)
                continue
            if candidate.anchor:
                return [candidate.cert]
            if depth + 1 > self._max_intermediates:
                self._refusals.append(
                    ChainError(
                        f"path needs more than {self._max_intermediates} intermediates",
                        spiffe_id=self._spiffe_id,
                    )
                )
                continue
            above = self.find(candidate.cert, index, depth + 1, used | {index})
            if above is not None:
                return [candidate.cert, *above]
        return None

    def failure(self) -> VerificationError:
        """The most specific reason no path was found."""
        if self._refusals:
            return self._refusals[0]
        if self._bad_signatures:
            return ChainError(
                "ML-DSA-65 certificate signature does not verify under "
                + ", ".join(dict.fromkeys(self._bad_signatures[:4])),
                spiffe_id=self._spiffe_id,
            )
        message = "chain does not lead to a certificate of the trust domain's PQC bundle"
        if self._unusable:
            message += "; unusable issuer candidates: " + "; ".join(dict.fromkeys(self._unusable[:4]))
        return ChainError(message, spiffe_id=self._spiffe_id)


def verify_pqc_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    spiffe_id: str | None,
    max_intermediates: int = 2,
) -> list[x509.Certificate]:
    """Path-validate an ML-DSA-65-signed chain (leaf first, the rest in any order) to one of ``roots``.

    Returns the CA certificates of the path (excluding the leaf, including the root). Every CA must
    be an ML-DSA-65 key with cA=true and keyCertSign, path lengths are honoured, and every
    certificate must be valid at ``at``. Raises ChainError / ValidityError / KeyUsageError /
    MalformedCredentialError.
    """
    if not chain:
        raise ChainError("empty certificate chain", spiffe_id=spiffe_id)
    if len(chain) - 1 > MAX_PRESENTED:
        raise ChainError(
            f"chain has {len(chain) - 1} certificates besides the leaf, at most {MAX_PRESENTED} allowed",
            spiffe_id=spiffe_id,
        )
    leaf = chain[0]
    try:
        check_parsed(leaf, what="leaf certificate")
    except ParseError as exc:
        raise MalformedCredentialError(str(exc), spiffe_id=spiffe_id) from exc
    check_validity(leaf, at, role="leaf", spiffe_id=spiffe_id)
    candidates = [_Candidate(root, f"trust anchor {i}", anchor=True) for i, root in enumerate(roots)]
    seen = {_der(c.cert) for c in candidates} | {_der(leaf)}
    for index, cert in enumerate(chain[1:], start=1):
        # A presented copy of an anchor is the anchor (tried as such); a repeat adds nothing.
        if (encoded := _der(cert)) not in seen:
            seen.add(encoded)
            candidates.append(_Candidate(cert, f"chain certificate {index}", anchor=False))
    search = _PathSearch(candidates, at=at, spiffe_id=spiffe_id, max_intermediates=max_intermediates)
    path = search.find(leaf, -1, 0, frozenset())
    if path is None:
        raise search.failure()
    return path


def _is_ca(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def _can_sign_certs(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        # RFC 5280 §4.2.1.3: without keyUsage the key is not restricted (OpenSSL's `req -x509`
        # makes such roots); cA=true is still required by the caller.
        return True


def _check_ca(
    cert: x509.Certificate, depth: int, at: dt.datetime, spiffe_id: str | None, *, role: str
) -> None:
    ca, path_length = _is_ca(cert)
    if not ca:
        raise ChainError(f"{role} is not a CA (basicConstraints cA is false or absent)", spiffe_id=spiffe_id)
    if not _can_sign_certs(cert):
        raise KeyUsageError(f"{role} lacks keyCertSign", spiffe_id=spiffe_id)
    if path_length is not None and depth > path_length:
        raise ChainError(f"{role} pathLenConstraint {path_length} exceeded", spiffe_id=spiffe_id)
    check_validity(cert, at, role=role, spiffe_id=spiffe_id)
