"""The signed PQC bundle document a trust domain publishes for federation (docs/federation.md).

The document is a SPIFFE bundle (Trust Domain and Bundle §4) of the trust domain's PQC material:

* ``x509-svid`` entries: its PQC roots (ML-DSA-65 CA certificates);
* ``jwt-svid`` entries: its PQC JWT keys (``AKP``, each with ``x5c``, :mod:`spire_pqc.jwtsvid.bundle`),
  among them the key that signs this document;
* ``spiffe_sequence`` (required here) and ``spiffe_refresh_hint``.

Its signature is a **detached** ML-DSA-65 JWS (RFC 7515 Appendix F; RFC 9964 ``alg``), carried beside
the document (the bundle endpoint sends it in the ``Spire-Pqc-Bundle-Signature`` response header):
``BASE64URL(header) '..' BASE64URL(signature)`` with header
``{"alg": "ML-DSA-65", "kid": <thumbprint>, "typ": "spiffe-bundle+jws"}``, over the signing input
``BASE64URL(header) '.' BASE64URL(document bytes)``. The signer is a trust-domain signer certificate
with the bundle EKU (:mod:`spire_pqc.x509.signer`): the PQC root key stays offline, and the root
certifies the intermediate that certifies the signer.

:func:`verify_signed_bundle` anchors the signer in the roots the verifier **already** trusted for
that trust domain (the configured initial bundle, then the last accepted document), never in the
roots of the document being verified. So a root rotation is accepted only when the new document is
signed under a currently trusted root: publish the new root beside the old one first (as the SPIFFE
federation specification asks for any key), then drop the old one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from spire_pqc.bundle import SpiffeBundle
from spire_pqc.errors import (
    BundleError,
    BundleSequenceError,
    BundleSignatureError,
    MalformedCredentialError,
    TokenMalformedError,
    TokenSignatureError,
    VerificationError,
)
from spire_pqc.jwtsvid.bundle import PqcJwtBundle, PqcJwtKey
from spire_pqc.jwtsvid.jws import (
    ALG_ML_DSA_65,
    AkpPublicJwk,
    CompactJws,
    b64url_encode,
    sign_compact,
    verify_mldsa,
)
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.certs import mldsa_public_key
from spire_pqc.x509.signer import KP_BUNDLE, TrustDomainSigner, verify_signer

__all__ = ["JWS_TYPE", "SIGNATURE_HEADER", "SignedBundle", "sign_bundle", "verify_signed_bundle"]

#: ``typ`` of the detached JWS (RFC 7515 §4.1.9 media type, "application/" omitted).
JWS_TYPE = "spiffe-bundle+jws"
#: HTTP response header that carries the detached JWS beside the document.
SIGNATURE_HEADER = "Spire-Pqc-Bundle-Signature"
#: A detached ML-DSA-65 JWS is about 4.5 KB; anything much larger is not one of ours.
MAX_SIGNATURE_BYTES = 8 * 1024
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})


@dataclass(frozen=True)
class SignedBundle:
    """A bundle document (the exact bytes) and its detached JWS."""

    document: bytes = field(repr=False)
    signature: str = field(repr=False)


def sign_bundle(bundle: SpiffeBundle, signer: TrustDomainSigner) -> SignedBundle:
    """Serialize ``bundle`` and sign it. The bundle must list the signer's key among its JWT keys (with
    its chain), so a verifier finds it; it is added when missing."""
    if bundle.sequence is None:
        raise BundleError(f"bundle of {bundle.trust_domain}: a federated PQC bundle needs spiffe_sequence")
    kid = AkpPublicJwk(signer.key.public_key()).thumbprint()
    jwt_authorities = dict(bundle.jwt_authorities)
    jwt_authorities.setdefault(kid, PqcJwtKey.from_signer(signer).entry())
    document = SpiffeBundle(
        bundle.trust_domain, bundle.x509_authorities, jwt_authorities, bundle.sequence, bundle.refresh_hint
    ).to_json()
    header = {"alg": ALG_ML_DSA_65, "kid": kid, "typ": JWS_TYPE}
    header_segment, _, signature_segment = sign_compact(header, b64url_encode(document), signer.key).split(
        "."
    )
    return SignedBundle(document, f"{header_segment}..{signature_segment}")


def _parse_signature(signature: str, who: str) -> CompactJws:
    if not signature:
        raise BundleSignatureError("the bundle document is unsigned", spiffe_id=who)
    try:
        jws = CompactJws.parse(signature, what="bundle signature", max_bytes=MAX_SIGNATURE_BYTES)
    except TokenMalformedError as exc:
        raise BundleSignatureError(str(exc), spiffe_id=who) from None
    if jws.payload_segment:
        raise BundleSignatureError(
            "the bundle signature must be a detached JWS (empty payload)", spiffe_id=who
        )
    if set(jws.header) - _HEADER_MEMBERS or jws.header.get("alg") != ALG_ML_DSA_65:
        raise BundleSignatureError(
            f"the bundle signature header must be exactly alg={ALG_ML_DSA_65}, kid, typ", spiffe_id=who
        )
    if jws.header.get("typ") != JWS_TYPE or not isinstance(jws.header.get("kid"), str):
        raise BundleSignatureError(f"the bundle signature needs typ {JWS_TYPE!r} and a kid", spiffe_id=who)
    return jws


def _check_roots(bundle: SpiffeBundle, who: str) -> None:
    if not bundle.x509_authorities:
        # An empty key set revokes everything (SPIFFE); for PQC roots it would also make every later
        # document unverifiable, so it is refused and the last good bundle stays.
        raise BundleError(f"PQC bundle of {bundle.trust_domain} lists no PQC root")
    for index, root in enumerate(bundle.x509_authorities):
        try:
            mldsa_public_key(root, spiffe_id=who)
            constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, VerificationError) as exc:
            raise BundleError(
                f"PQC bundle of {bundle.trust_domain}: authority {index} is not a PQC CA ({exc})"
            ) from None
        if not constraints.ca:
            raise BundleError(f"PQC bundle of {bundle.trust_domain}: authority {index} is not a CA")


def verify_signed_bundle(
    trust_domain: TrustDomain,
    signed: SignedBundle,
    *,
    trusted_roots: Sequence[x509.Certificate],
    previous: SpiffeBundle | None = None,
    at: dt.datetime | None = None,
) -> SpiffeBundle:
    """The bundle in ``signed`` if its signature verifies under a signer that chains to
    ``trusted_roots`` (the roots trusted for ``trust_domain`` *before* this document) and its
    sequence number does not go back from ``previous``.

    Raises BundleSignatureError (unsigned, bad or untrusted signature), BundleSequenceError (replay
    or rollback), BundleError (malformed document). Never returns a bundle it did not verify.
    """
    when = at or dt.datetime.now(dt.UTC)
    who = trust_domain.id_string()
    jws = _parse_signature(signed.signature, who)
    bundle = SpiffeBundle.parse(trust_domain, signed.document)
    kid = str(jws.header["kid"])
    entry = bundle.jwt_authorities.get(kid)
    if entry is None:
        raise BundleSignatureError(
            f"the signing key {kid[:60]!r} is not listed in the document", spiffe_id=who
        )
    try:
        key = PqcJwtKey.from_entry(entry, what=f"signing key {kid[:60]!r}")
        verify_signer(key.chain, trusted_roots, trust_domain=trust_domain.name, purpose=KP_BUNDLE, at=when)
        verify_mldsa(jws, key.jwk.key, payload_segment=b64url_encode(signed.document), spiffe_id=who)
    except (BundleError, MalformedCredentialError) as exc:
        raise BundleSignatureError(f"the signing key is unusable: {exc}", spiffe_id=who) from None
    except TokenSignatureError:
        raise BundleSignatureError(
            "the ML-DSA-65 signature over the document does not verify", spiffe_id=who
        ) from None
    except VerificationError as exc:
        raise BundleSignatureError(
            f"the signing key is not certified under a trusted PQC root of {trust_domain} ({exc})",
            spiffe_id=who,
        ) from None
    if bundle.sequence is None:
        raise BundleSequenceError("the document has no spiffe_sequence", spiffe_id=who)
    if previous is not None and previous.sequence is not None:
        if bundle.sequence < previous.sequence:
            raise BundleSequenceError(
                f"sequence {bundle.sequence} is older than the trusted {previous.sequence} (replay?)",
                spiffe_id=who,
            )
        if bundle.sequence == previous.sequence and bundle != previous:
            raise BundleSequenceError(
                f"sequence {bundle.sequence} changed without a new number", spiffe_id=who
            )
    _check_roots(bundle, who)
    # The JWT keys must parse as certified PQC JWT keys (their chains are checked when used).
    PqcJwtBundle.from_entries(
        trust_domain, bundle.jwt_authorities.values(), what=f"PQC bundle of {trust_domain}"
    )
    return bundle
