"""A small PKI for credential tests: valid hybrid SVIDs, and builders for every kind of bad one.

The valid path is the production path (as in ``spire-pqc demo``): :class:`PQCHierarchy` (PQC root +
intermediate PQC CA), :class:`DevClassicalCA` (SPIRE stand-in whose SVIDs carry the SvidBinding
through the composer code), :func:`build_request` (node-agent side, both proofs) and
:class:`PQCIssuer` (the CA's policy and issuance).

Bad credentials are crafted with cryptography's ``CertificateBuilder`` directly, so each variant
differs from a valid credential in exactly the one property a test is about.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_pqc.bundle import BundleSet
from spire_pqc.ca.devca import DEV_ORGANIZATION, DevClassicalCA, PQCHierarchy
from spire_pqc.ca.issuer import PQCIssuer
from spire_pqc.ca.ledger import MEMORY, open_ledger
from spire_pqc.ca.request import IssueRequest, build_request
from spire_pqc.crypto import _backend
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509.binding import SvidBinding, sign_binding
from spire_pqc.x509.oids import RELATED_CERT, SVID_BINDING
from spire_pqc.x509.related import encode_related_certificate

WORKLOAD_PATH = "/ns/prod/sa/web"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_object(subject_spki: bytes) -> CertificatePublicKeyTypes:
    # Only ever ML-DSA, ML-KEM or EC SPKIs here (never DH, which a certificate cannot carry).
    return cast(CertificatePublicKeyTypes, serialization.load_der_public_key(subject_spki))


def mldsa_signer(key: MLDSA65PrivateKey) -> object:
    # A cryptography key object for the same seed, so crafted certificates (built with cryptography's
    # builder, which accepts anything) are signed by the same key as real ones.
    return _backend.openssl_helpers().cryptography_mldsa65_private_key(key.seed())


@dataclass(frozen=True)
class KeyUsageBits:
    """keyUsage bits by name; only the ones set are True."""

    digital_signature: bool = False
    key_encipherment: bool = False
    key_agreement: bool = False
    key_cert_sign: bool = False
    crl_sign: bool = False

    def extension(self) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=self.digital_signature,
            content_commitment=False,
            key_encipherment=self.key_encipherment,
            data_encipherment=False,
            key_agreement=self.key_agreement,
            key_cert_sign=self.key_cert_sign,
            crl_sign=self.crl_sign,
            encipher_only=False,
            decipher_only=False,
        )


SIGNING = KeyUsageBits(digital_signature=True)
#: What SPIRE puts in an X509-SVID: digitalSignature, keyEncipherment, keyAgreement.
CLASSICAL = KeyUsageBits(digital_signature=True, key_encipherment=True, key_agreement=True)
KEM_ONLY = KeyUsageBits(key_encipherment=True)


@dataclass
class Minted:
    """A valid hybrid SVID and everything that produced it."""

    spiffe_id: SpiffeId
    classical_leaf: x509.Certificate
    classical_key: ec.EllipticCurvePrivateKey
    mldsa_key: MLDSA65PrivateKey
    mlkem_key: MLKEM768PrivateKey
    request: IssueRequest
    pqc_chain: list[x509.Certificate]
    kem_chain: list[x509.Certificate]

    @property
    def classical_chain(self) -> list[x509.Certificate]:
        return [self.classical_leaf]

    @property
    def pqc_leaf(self) -> x509.Certificate:
        return self.pqc_chain[0]

    @property
    def kem_leaf(self) -> x509.Certificate:
        return self.kem_chain[0]


@dataclass
class Domain:
    """One trust domain: a PQC hierarchy, a dev classical CA binding with its intermediate, bundles."""

    trust_domain: TrustDomain
    hierarchy: PQCHierarchy
    classical_ca: DevClassicalCA
    issuer: PQCIssuer = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = self.new_issuer()

    @classmethod
    def create(cls, name: str) -> Domain:
        td = TrustDomain.parse(name)
        hierarchy = PQCHierarchy.generate(td)
        return cls(td, hierarchy, DevClassicalCA(td, hierarchy.intermediate.key))

    @property
    def intermediate_key(self) -> MLDSA65PrivateKey:
        return self.hierarchy.intermediate.key

    @property
    def intermediate(self) -> x509.Certificate:
        return self.hierarchy.intermediate.certificate

    @property
    def classical_bundles(self) -> BundleSet:
        return BundleSet.from_certificates([self.classical_ca.certificate])

    @property
    def pqc_bundles(self) -> BundleSet:
        return BundleSet.from_certificates([self.hierarchy.root])

    def spiffe_id(self, path: str = WORKLOAD_PATH) -> SpiffeId:
        return SpiffeId.parse(f"{self.trust_domain.id_string()}{path}")

    def new_issuer(self, **kwargs: object) -> PQCIssuer:
        """A PQC CA for this trust domain with an empty ledger (issuance tests must not share state)."""
        return PQCIssuer(
            self.hierarchy.intermediate,
            self.trust_domain,
            self.classical_bundles,
            ledger=open_ledger(MEMORY),
            **kwargs,  # type: ignore[arg-type]
        )

    def mint(self, path: str = WORKLOAD_PATH, *, ttl: dt.timedelta = dt.timedelta(hours=1)) -> Minted:
        """A valid hybrid SVID through the production flow (dev classical CA → request → PQCIssuer)."""
        spiffe_id = self.spiffe_id(path)
        leaf, key = self.classical_ca.issue_svid(spiffe_id, ttl=ttl)
        mldsa_key, mlkem_key = MLDSA65PrivateKey.generate(), MLKEM768PrivateKey.generate()
        request = build_request(
            (der(leaf),), key, mldsa_key, mlkem_key.public_key().spki(), timestamp_ms=now_ms()
        )
        issued = self.issuer.issue(request)
        load = x509.load_der_x509_certificate
        return Minted(
            spiffe_id=spiffe_id,
            classical_leaf=leaf,
            classical_key=key,
            mldsa_key=mldsa_key,
            mlkem_key=mlkem_key,
            request=request,
            pqc_chain=[load(c) for c in issued.response.pqc_svid_chain],
            kem_chain=[load(c) for c in issued.response.kem_certificate_chain],
        )

    # --- crafted classical leaves --------------------------------------------------------------

    def classical_leaf(
        self,
        spiffe_id: SpiffeId | None = None,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        uris: Sequence[str] | None = None,
        ca: bool = False,
        usage: KeyUsageBits = CLASSICAL,
        usage_critical: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        binding: bytes | str | None = "valid",
        binding_key: MLDSA65PrivateKey | None = None,
        binding_spiffe_id: str | None = None,
        binding_spki: bytes | None = None,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A classical X509-SVID like the dev CA's, with one property changed.

        ``binding``: ``"valid"`` signs a binding (by ``binding_key``, over ``binding_spiffe_id`` and
        ``binding_spki``, defaulting to the intermediate, this SVID's ID and key); bytes are used
        verbatim as the extension value; None leaves the extension out.
        """
        spiffe_id = spiffe_id or self.spiffe_id()
        key = key or ec.generate_private_key(ec.SECP256R1())
        ca_cert, ca_key = issuer or (self.classical_ca.certificate, self.classical_ca.private_key)
        now = utcnow()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(seconds=10))
            .not_valid_after(not_after or now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage.extension(), critical=usage_critical)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        uri_list = [str(spiffe_id)] if uris is None else list(uris)
        if uri_list:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uri_list]),
                critical=False,
            )
        if binding == "valid":
            signed = sign_binding(
                binding_key or self.intermediate_key,
                binding_spiffe_id or str(spiffe_id),
                binding_spki or spki(key),
            )
            binding = signed.encode()
        if isinstance(binding, bytes):
            builder = builder.add_extension(x509.UnrecognizedExtension(SVID_BINDING, binding), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    def binding_value(self, spiffe_id: str, subject_spki: bytes) -> SvidBinding:
        return sign_binding(self.intermediate_key, spiffe_id, subject_spki)

    # --- crafted PQC leaves --------------------------------------------------------------------

    def pqc_leaf(
        self,
        subject_spki: bytes,
        related_to: x509.Certificate | None,
        *,
        uris: Sequence[str] | None = None,
        spiffe_id: SpiffeId | None = None,
        ca: bool = False,
        usage: KeyUsageBits = SIGNING,
        usage_critical: bool = True,
        eku: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: tuple[x509.Certificate, MLDSA65PrivateKey] | None = None,
    ) -> x509.Certificate:
        """An ML-DSA-65-signed leaf over ``subject_spki`` (any key type), one property changed.

        Defaults match :func:`spire_pqc.x509.certs.build_pqc_svid`: issued by the intermediate,
        valid for one hour from now, RelatedCertificate over ``related_to`` (None: left out).
        """
        issuer_cert, issuer_key = issuer or (self.intermediate, self.intermediate_key)
        spiffe_id = spiffe_id or self.spiffe_id()
        now = utcnow()
        issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crafted")]))
            .issuer_name(issuer_cert.subject)
            .public_key(public_key_object(subject_spki))
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(seconds=30))
            .not_valid_after(not_after or now + dt.timedelta(minutes=50))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage.extension(), critical=usage_critical)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
            )
        )
        uri_list = [str(spiffe_id)] if uris is None else list(uris)
        if uri_list:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uri_list]),
                critical=False,
            )
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        if related_to is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(RELATED_CERT, encode_related_certificate(der(related_to))),
                critical=False,
            )
        return builder.sign(mldsa_signer(issuer_key), None)  # type: ignore[arg-type]


def tamper_signature(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate with one bit of its signature flipped (the signature is the DER's tail)."""
    raw = bytearray(der(cert))
    raw[-5] ^= 0x01
    return x509.load_der_x509_certificate(bytes(raw))


def fresh_mldsa_spki() -> bytes:
    return MLDSA65PrivateKey.generate().public_key().spki()


def fresh_mlkem_spki() -> bytes:
    return MLKEM768PrivateKey.generate().public_key().spki()


def classical_issuer(td: TrustDomain) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An unrelated classical CA certificate for ``td`` (same kind as the dev CA, different key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{td} rogue classical CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(KeyUsageBits(key_cert_sign=True, crl_sign=True).extension(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td.id_string())]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key
