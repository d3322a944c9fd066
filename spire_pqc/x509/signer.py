"""The trust-domain signer: an ML-DSA-65 key certified by an intermediate PQC CA to sign JOSE objects.

The intermediate's own key cannot sign JWTs or documents: its certificate allows keyCertSign only
(docs/formats.md), and a CA key that signs data in other formats invites cross-protocol confusion. So
each intermediate certifies a *signer*:

* ML-DSA-65 leaf under the intermediate, cA=false, keyUsage digitalSignature (critical);
* exactly one URI SAN, ``spiffe://<trust-domain>`` (no path: it speaks for the trust domain, and a
  workload's PQC SVID, which always has a path, can never pass for it);
* extendedKeyUsage ``id-spire-pqc-kp-jwtSvid`` (``2.25.1713860176.2``: signs the PQC parts of JWT-SVIDs)
  and ``id-spire-pqc-kp-bundle`` (``2.25.1713860176.3``: signs the federated PQC bundle document);
  a verifier requires the one for its purpose;
* notAfter ≤ the intermediate's, so it rotates with the intermediate.

A verifier holding only the trust domain's PQC roots checks a signer with :func:`verify_signer`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import KeyUsageError, LeafError, TokenKeyError
from spire_pqc.x509 import certs
from spire_pqc.x509.load import CRYPTOGRAPHY_PARSE_ERRORS
from spire_pqc.x509.oids import KP_BUNDLE, KP_JWT_SVID
from spire_pqc.x509.path import verify_pqc_chain

__all__ = ["KP_BUNDLE", "KP_JWT_SVID", "TrustDomainSigner", "build_signer_certificate", "verify_signer"]


def build_signer_certificate(
    intermediate: x509.Certificate,
    intermediate_key: MLDSA65PrivateKey,
    signer_key: MLDSA65PublicKey,
    trust_domain: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """The signer certificate for ``signer_key``, valid at most as long as ``intermediate``."""
    subject = certs._name(f"{trust_domain} PQC signer {signer_key.key_id()[:4].hex()}", trust_domain)
    builder = (
        certs._issued_builder(
            intermediate,
            subject,
            signer_key.spki(),
            not_before,
            min(not_after, intermediate.not_valid_after_utc),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(certs._key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([KP_JWT_SVID, KP_BUNDLE]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
    )
    return builder.sign(intermediate_key)


@dataclass(frozen=True)
class TrustDomainSigner:
    """A signer key with its chain (signer certificate first, then its intermediate)."""

    key: MLDSA65PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a trust-domain signer needs its certificate chain")
        if certs.mldsa_public_key(self.chain[0]) != self.key.public_key():
            raise ValueError("the signer certificate does not certify this key")

    @classmethod
    def issue(
        cls,
        intermediate: x509.Certificate,
        intermediate_key: MLDSA65PrivateKey,
        trust_domain: str,
        *,
        ttl: dt.timedelta,
        now: dt.datetime | None = None,
    ) -> TrustDomainSigner:
        """A fresh signer key certified by the intermediate for ``ttl`` (capped by the intermediate)."""
        when = now or dt.datetime.now(dt.UTC)
        key = MLDSA65PrivateKey.generate()
        cert = build_signer_certificate(
            intermediate,
            intermediate_key,
            key.public_key(),
            trust_domain,
            # Never before the intermediate: a next one's signer is certified ahead of its validity.
            not_before=max(when - dt.timedelta(minutes=1), intermediate.not_valid_before_utc),
            not_after=when + ttl,
        )
        return cls(key, (cert, intermediate))

    @property
    def not_after(self) -> dt.datetime:
        return self.chain[0].not_valid_after_utc


def _check_signer_leaf(leaf: x509.Certificate, trust_domain: str, purpose: x509.ObjectIdentifier) -> None:
    expected = f"spiffe://{trust_domain}"
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise LeafError(f"signer certificate lacks {exc.oid.dotted_string}", spiffe_id=expected) from None
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise LeafError(f"signer certificate extensions do not parse ({exc})", spiffe_id=expected) from None
    if constraints.ca:
        raise LeafError("signer certificate is a CA", spiffe_id=expected)
    if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
        raise KeyUsageError("signer certificate must allow digitalSignature only", spiffe_id=expected)
    if purpose not in eku:
        raise KeyUsageError(
            f"signer certificate lacks the extended key usage {purpose.dotted_string}", spiffe_id=expected
        )
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [expected]:
        raise LeafError(
            f"signer certificate must name exactly {expected}, names {uris[:3]}", spiffe_id=expected
        )


def verify_signer(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    trust_domain: str,
    purpose: x509.ObjectIdentifier,
    at: dt.datetime,
) -> MLDSA65PublicKey:
    """The signer's public key, if ``chain`` (signer first) is a signer of ``trust_domain`` for
    ``purpose`` that chains to one of ``roots`` at ``at``. Raises a VerificationError subclass."""
    who = f"spiffe://{trust_domain}"
    if not roots:
        raise TokenKeyError(f"no PQC roots of {trust_domain} to verify the signer against", spiffe_id=who)
    verify_pqc_chain(chain, roots, at=at, spiffe_id=who, max_intermediates=1)
    _check_signer_leaf(chain[0], trust_domain, purpose)
    return certs.mldsa_public_key(chain[0], spiffe_id=who)
