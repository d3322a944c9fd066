"""The embedded development CA: a classical CA standing in for SPIRE, plus a local PQC CA.

Used by ``spire-pqc demo``, tests and first contact without SPIRE. Everything it makes is labelled
"dev" (subject O=spire-pqc-dev), and production configuration refuses it. Its classical SVIDs go
through the same composer code (:func:`spire_pqc.ca.composer.binding_extension`) as SPIRE's do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spire_pqc.ca.composer import binding_extension
from spire_pqc.ca.issuer import IntermediateCA
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509 import certs

DEV_ORGANIZATION = "spire-pqc-dev"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class PQCHierarchy:
    """A PQC root and one intermediate PQC CA of a trust domain."""

    root_key: MLDSA65PrivateKey
    root: x509.Certificate
    intermediate: IntermediateCA

    @classmethod
    def generate(
        cls, trust_domain: TrustDomain, *, lifetime: dt.timedelta = dt.timedelta(days=30)
    ) -> PQCHierarchy:
        now = _utcnow()
        root_key = MLDSA65PrivateKey.generate()
        root = certs.build_pqc_root(
            root_key, str(trust_domain), not_before=now - dt.timedelta(minutes=5), not_after=now + lifetime
        )
        inter_key = MLDSA65PrivateKey.generate()
        inter = certs.build_intermediate(
            root, root_key, inter_key.public_key(), str(trust_domain),
            not_before=now - dt.timedelta(minutes=5), not_after=now + lifetime,
        )  # fmt: skip
        return cls(root_key, root, IntermediateCA(inter_key, inter, (root,)))


class DevClassicalCA:
    """An ECDSA P-256 CA that issues X509-SVIDs carrying the SvidBinding, like SPIRE + our plugin."""

    def __init__(self, trust_domain: TrustDomain, binding_key: MLDSA65PrivateKey | None) -> None:
        self.trust_domain = trust_domain
        self._binding_key = binding_key
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = _utcnow()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"{trust_domain} dev classical CA (NOT FOR PRODUCTION)"
                ),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain.id_string())]),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return self._key

    def issue_svid(
        self, spiffe_id: SpiffeId, *, ttl: dt.timedelta = dt.timedelta(hours=1), with_binding: bool = True
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Issue a classical X509-SVID (ECDSA P-256 key generated here) with the binding extension."""
        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        now = _utcnow()
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=10))
            .not_valid_after(min(now + ttl, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        if with_binding and self._binding_key is not None:
            ext = binding_extension(self._binding_key, str(spiffe_id), spki)
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(ext.oid), ext.value), critical=ext.critical
            )
        return builder.sign(self._key, hashes.SHA256()), key
