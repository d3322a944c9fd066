"""Building and checking the PQC certificates (docs/formats.md).

* PQC root: ML-DSA-65, self-signed, cA, keyCertSign, URI SAN ``spiffe://<td>``.
* Intermediate PQC CA: ML-DSA-65 under the root (pathLen 0), optionally cross-certified by a
  classical root (an ECDSA signature over the same ML-DSA-65 public key).
* PQC SVID: ML-DSA-65 leaf, one URI SAN, digitalSignature (critical), EKU serverAuth+clientAuth,
  RelatedCertificate = SHA-256 of the classical leaf.
* KEM certificate: ML-KEM-768 leaf, keyEncipherment only, no EKU (never a TLS identity).

ML-DSA-65-signed certificates are encoded by :mod:`spire_pqc.x509.tbs` and signed *and* checked
through the selected PQ backend (empty context, RFC 9881); the ECDSA cross-certificate is built and
signed by cryptography's builder.
Path validation is in :mod:`spire_pqc.x509.path`, loading from bytes in :mod:`spire_pqc.x509.load`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_pqc._internal import der
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PublicKey
from spire_pqc.errors import (
    AlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    MalformedCredentialError,
    ValidityError,
)
from spire_pqc.x509.load import CRYPTOGRAPHY_PARSE_ERRORS
from spire_pqc.x509.oids import ID_PE_RELATED_CERT, ML_DSA_65, ML_KEM_768
from spire_pqc.x509.related import encode_related_certificate
from spire_pqc.x509.tbs import TbsBuilder, encode_extension, extension_der, spki_key_bits

ORGANIZATION = "spire-pqc"

# The ML-DSA-signed certificates use our TbsBuilder; the cross-certificate (ECDSA) cryptography's.
_Builder = TypeVar("_Builder", TbsBuilder, x509.CertificateBuilder)


def _key_identifier(spki_der: bytes) -> bytes:
    # RFC 5280 §4.2.1.2 method 1 (SHA-1 of the key bits): what OpenSSL and Go compute too.
    return hashlib.sha1(spki_key_bits(spki_der), usedforsecurity=False).digest()


def _public_key_object(spki_der: bytes) -> CertificatePublicKeyTypes:
    # The SPKI always comes from our own ML-DSA/ML-KEM key classes, never a DH key.
    return cast(CertificatePublicKeyTypes, serialization.load_der_public_key(spki_der))


def _name(common_name: str, trust_domain: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set (e.g. ``_key_usage(key_cert_sign=True)``)."""
    bits = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    unknown = set(allowed) - set(bits)
    if unknown:
        raise ValueError(f"unknown keyUsage bits: {sorted(unknown)}")
    bits.update(allowed)
    return x509.KeyUsage(**bits)


def _ca_extensions(builder: _Builder, path_length: int, trust_domain: str) -> _Builder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
            critical=False,
        )
    )


def build_pqc_root(
    key: MLDSA65PrivateKey, trust_domain: str, *, not_before: dt.datetime, not_after: dt.datetime
) -> x509.Certificate:
    """Self-signed ML-DSA-65 root of a trust domain's PQC bundle."""
    spki = key.public_key().spki()
    name = _name(f"{trust_domain} PQC root CA", trust_domain)
    builder = (
        TbsBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key_spki(spki)
        .serial_number(x509.random_serial_number())
        .validity(not_before, not_after)
        .add_extension(x509.SubjectKeyIdentifier(_key_identifier(spki)), critical=False)
    )
    # pathLen 1: the root certifies intermediates (pathLen 0), which certify leaves.
    return _ca_extensions(builder, 1, trust_domain).sign(key)


@dataclass(frozen=True)
class IssuerTemplate:
    """What every certificate an issuer signs repeats: its subject as the issuer name, and the
    AuthorityKeyIdentifier extension. Derived once per issuer certificate (:func:`issuer_template`)."""

    name: bytes
    authority_key_identifier: bytes
    not_after: dt.datetime


@functools.lru_cache(maxsize=32)
def issuer_template(issuer: x509.Certificate) -> IssuerTemplate:
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    return IssuerTemplate(
        issuer.subject.public_bytes(), extension_der(aki, False), issuer.not_valid_after_utc
    )


def _issued_builder(
    issuer: x509.Certificate,
    subject: x509.Name,
    subject_spki: bytes,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> TbsBuilder:
    template = issuer_template(issuer)
    return (
        TbsBuilder()
        .subject_name(subject)
        .issuer_name(template.name)
        .public_key_spki(subject_spki)
        .serial_number(x509.random_serial_number())
        .validity(not_before, not_after)
        .add_extension(x509.SubjectKeyIdentifier(_key_identifier(subject_spki)), critical=False)
        .add_extension_der(_AKI, template.authority_key_identifier)
    )


def build_intermediate(
    root: x509.Certificate,
    root_key: MLDSA65PrivateKey,
    intermediate_key: MLDSA65PublicKey,
    trust_domain: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """Intermediate PQC CA certificate under the PQC root (cA, pathLen 0, keyCertSign)."""
    subject = _name(f"{trust_domain} PQC intermediate CA {intermediate_key.key_id()[:4].hex()}", trust_domain)
    builder = _issued_builder(
        root, subject, intermediate_key.spki(), not_before, min(not_after, root.not_valid_after_utc)
    )
    return _ca_extensions(builder, 0, trust_domain).sign(root_key)


def cross_certify_intermediate(
    classical_root: x509.Certificate,
    classical_root_key: ec.EllipticCurvePrivateKey,
    intermediate_key: MLDSA65PublicKey,
    trust_domain: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """The same intermediate public key certified by a classical (ECDSA) root (docs/formats.md).

    A classical signature: cryptography's builder signs it, with the same fields as :func:`_issued_builder`."""
    subject = _name(f"{trust_domain} PQC intermediate CA {intermediate_key.key_id()[:4].hex()}", trust_domain)
    spki = intermediate_key.spki()
    root_ski = classical_root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(classical_root.subject)
        .public_key(_public_key_object(spki))
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, classical_root.not_valid_after_utc))
        .add_extension(x509.SubjectKeyIdentifier(_key_identifier(spki)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
        )
    )
    return _ca_extensions(builder, 0, trust_domain).sign(classical_root_key, hashes.SHA256())


@functools.lru_cache(maxsize=64)
def _name_der(common_name: str, trust_domain: str) -> bytes:
    return _name(common_name, trust_domain).public_bytes()


def _leaf_certificate(
    issuer: x509.Certificate,
    issuer_key: MLDSA65PrivateKey,
    subject_spki: bytes,
    subject_key_bits: bytes,
    spiffe_id: str,
    related_leaf_der: bytes,
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    common_name: str,
    trust_domain: str,
    usage: tuple[tuple[str, bytes], ...],
) -> x509.Certificate:
    """A PQC SVID or KEM certificate. The CA makes two per issuance, so the template is assembled in
    one step from pre-encoded parts instead of extension by extension (same bytes as the builder path:
    tests/unit/x509/test_tbs.py)."""
    if not_after < not_before:
        raise ValueError("notAfter is before notBefore")
    template = issuer_template(issuer)
    key_id = hashlib.sha1(subject_key_bits, usedforsecurity=False).digest()  # as _key_identifier
    extensions = (
        (_SKI, encode_extension(_SKI, der.tlv(der.OCTET_STRING, key_id))),
        (_AKI, template.authority_key_identifier),
        (_BASIC_CONSTRAINTS, _NOT_CA),
        # GeneralNames { uniformResourceIdentifier [6] IA5String }: a SPIFFE ID is ASCII.
        (_SAN, encode_extension(_SAN, der.sequence(der.tlv(0x86, spiffe_id.encode("ascii"))))),
        (
            ID_PE_RELATED_CERT,
            encode_extension(ID_PE_RELATED_CERT, encode_related_certificate(related_leaf_der)),
        ),
        *usage,
    )
    return TbsBuilder(
        issuer=template.name,
        subject=_name_der(common_name, trust_domain),
        spki=subject_spki,
        serial=x509.random_serial_number(),
        not_before=not_before,
        not_after=not_after,
        extensions=tuple(encoded for _, encoded in extensions),
        extension_oids=tuple(oid for oid, _ in extensions),
    ).sign(issuer_key)


def build_pqc_svid(
    issuer: x509.Certificate,
    issuer_key: MLDSA65PrivateKey,
    subject_key: MLDSA65PublicKey,
    spiffe_id: str,
    *,
    trust_domain: str,
    classical_leaf_der: bytes,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    return _leaf_certificate(
        issuer, issuer_key, subject_key.spki(), subject_key.raw(), spiffe_id, classical_leaf_der, not_before, not_after,
        common_name="PQC SVID", trust_domain=trust_domain,
        usage=((_KEY_USAGE, _SIGNING_USAGE), (_EXTENDED_KEY_USAGE, _SERVER_CLIENT_AUTH)),
    )  # fmt: skip


def build_kem_certificate(
    issuer: x509.Certificate,
    issuer_key: MLDSA65PrivateKey,
    subject_key: MLKEM768PublicKey,
    spiffe_id: str,
    *,
    trust_domain: str,
    classical_leaf_der: bytes,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    # RFC 9935: if keyUsage is present, keyEncipherment is the only bit.
    return _leaf_certificate(
        issuer, issuer_key, subject_key.spki(), subject_key.raw(), spiffe_id, classical_leaf_der, not_before, not_after,
        common_name="KEM certificate", trust_domain=trust_domain, usage=((_KEY_USAGE, _KEM_USAGE),),
    )  # fmt: skip


_SKI = x509.OID_SUBJECT_KEY_IDENTIFIER.dotted_string
_AKI = x509.OID_AUTHORITY_KEY_IDENTIFIER.dotted_string
_BASIC_CONSTRAINTS = x509.OID_BASIC_CONSTRAINTS.dotted_string
_SAN = x509.OID_SUBJECT_ALTERNATIVE_NAME.dotted_string
_KEY_USAGE = x509.OID_KEY_USAGE.dotted_string
_EXTENDED_KEY_USAGE = x509.OID_EXTENDED_KEY_USAGE.dotted_string
# Extensions every leaf of a kind carries unchanged, encoded once.
_NOT_CA = extension_der(x509.BasicConstraints(ca=False, path_length=None), True)
_SIGNING_USAGE = extension_der(_key_usage(digital_signature=True), True)
_KEM_USAGE = extension_der(_key_usage(key_encipherment=True), True)
_SERVER_CLIENT_AUTH = extension_der(
    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False
)


# --- inspection and checks ---------------------------------------------------------------------


def public_key_oid(cert: x509.Certificate) -> str:
    return cert.public_key_algorithm_oid.dotted_string


def spki_der(cert: x509.Certificate, *, spiffe_id: str | None = None) -> bytes:
    """The certificate's SubjectPublicKeyInfo DER; MalformedCredentialError if the key does not parse."""
    try:
        key = cert.public_key()
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise MalformedCredentialError(
            f"certificate public key does not parse ({type(exc).__name__}: {exc})", spiffe_id=spiffe_id
        ) from exc
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def mldsa_public_key(cert: x509.Certificate, *, spiffe_id: str | None = None) -> MLDSA65PublicKey:
    if cert.public_key_algorithm_oid != ML_DSA_65:
        raise AlgorithmError(f"expected an ML-DSA-65 key, found {public_key_oid(cert)}", spiffe_id=spiffe_id)
    try:
        return MLDSA65PublicKey.from_spki(spki_der(cert, spiffe_id=spiffe_id))
    except InvalidKeyError as exc:
        raise MalformedCredentialError(f"ML-DSA-65 public key: {exc}", spiffe_id=spiffe_id) from exc


def mlkem_public_key(cert: x509.Certificate, *, spiffe_id: str | None = None) -> MLKEM768PublicKey:
    if cert.public_key_algorithm_oid != ML_KEM_768:
        raise AlgorithmError(f"expected an ML-KEM-768 key, found {public_key_oid(cert)}", spiffe_id=spiffe_id)
    try:
        return MLKEM768PublicKey.from_spki(spki_der(cert, spiffe_id=spiffe_id))
    except InvalidKeyError as exc:
        raise AlgorithmError(str(exc), spiffe_id=spiffe_id) from exc


def check_validity(cert: x509.Certificate, at: dt.datetime, *, role: str, spiffe_id: str | None) -> None:
    if at < cert.not_valid_before_utc:
        raise ValidityError(
            f"{role} is not valid before {cert.not_valid_before_utc.isoformat()}", spiffe_id=spiffe_id
        )
    if at > cert.not_valid_after_utc:
        raise ValidityError(f"{role} expired at {cert.not_valid_after_utc.isoformat()}", spiffe_id=spiffe_id)


def check_mldsa_signature(cert: x509.Certificate, issuer_key: MLDSA65PublicKey) -> bool:
    """True when ``cert`` carries a valid ML-DSA-65 signature by ``issuer_key`` (empty context)."""
    if cert.signature_algorithm_oid != ML_DSA_65:
        return False
    try:
        issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, context=b"")
    except InvalidSignatureError:
        return False
    return True
