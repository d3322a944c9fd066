"""Certificates edited at the DER level and signed again, for inputs no builder would produce.

cryptography's ``CertificateBuilder`` refuses to write a malformed name, a public key of the wrong
length or an unknown version, yet those are exactly the certificates a hostile peer sends. These
helpers take a valid certificate apart into its TBSCertificate fields, let a test replace one field
with arbitrary DER, and sign the result with the real issuer key, so the certificate still passes
every signature check and the malformed field reaches the code behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc._internal import der
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey

# Positions of the TBSCertificate fields of a v3 certificate (RFC 5280 §4.1).
VERSION, SERIAL, SIGNATURE, ISSUER, VALIDITY, SUBJECT, SPKI, EXTENSIONS = range(8)

Signer = Callable[[bytes], bytes]
Field = tuple[int, bytes]


def mldsa_signer(key: MLDSA65PrivateKey) -> Signer:
    """ML-DSA-65 over the TBSCertificate with the empty context (RFC 9881)."""
    return lambda tbs: key.sign(tbs, context=b"")


def ecdsa_signer(key: ec.EllipticCurvePrivateKey) -> Signer:
    return lambda tbs: key.sign(tbs, ec.ECDSA(hashes.SHA256()))


@dataclass
class Parts:
    """A certificate as (TBS fields, signatureAlgorithm TLV); edit ``fields`` then :meth:`sign`."""

    fields: list[Field]
    algorithm: Field

    @classmethod
    def of(cls, cert: x509.Certificate | bytes) -> Parts:
        data = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
        outer = der.DerReader(der.read_single(data, der.SEQUENCE, what="certificate"))
        reader = der.DerReader(outer.expect(der.SEQUENCE, "tbsCertificate"))
        algorithm = outer.read()
        fields = []
        while not reader.at_end():
            fields.append(reader.read())
        return cls(fields, algorithm)

    def tbs(self) -> bytes:
        return der.sequence(*(der.tlv(tag, value) for tag, value in self.fields))

    def sign(self, signer: Signer) -> bytes:
        tbs = self.tbs()
        return der.sequence(tbs, der.tlv(*self.algorithm), der.tlv(der.BIT_STRING, b"\x00" + signer(tbs)))

    def replace(self, index: int, tlv_bytes: bytes) -> Parts:
        """A copy with field ``index`` replaced by one complete TLV."""
        tag, value = der.DerReader(tlv_bytes).read()
        fields = list(self.fields)
        fields[index] = (tag, value)
        return Parts(fields, self.algorithm)


def name_with_bit_string_cn(text: bytes = b"A") -> bytes:
    """Name ::= SEQUENCE { SET { SEQUENCE { id-at-commonName, BIT STRING } } } (CN must be a string)."""
    atv = der.sequence(der.encode_oid("2.5.4.3"), der.tlv(der.BIT_STRING, b"\x00" + text))
    return der.sequence(der.tlv(0x31, atv))


def truncated_spki(cert: x509.Certificate, *, drop: int = 1) -> bytes:
    """The certificate's SubjectPublicKeyInfo with the key ``drop`` bytes short (1951 for ML-DSA-65)."""
    spki_value = dict(enumerate(Parts.of(cert).fields))[SPKI][1]
    reader = der.DerReader(spki_value)
    algorithm = reader.read()
    bits = reader.expect(der.BIT_STRING, "subjectPublicKey")
    return der.sequence(der.tlv(*algorithm), der.tlv(der.BIT_STRING, bits[:-drop]))


def with_field(cert: x509.Certificate, index: int, tlv_bytes: bytes, signer: Signer) -> bytes:
    """``cert`` with TBS field ``index`` replaced, signed again by ``signer``."""
    return Parts.of(cert).replace(index, tlv_bytes).sign(signer)


def extensions_of(cert: x509.Certificate) -> list[bytes]:
    """The certificate's Extension TLVs, in order."""
    value = dict(enumerate(Parts.of(cert).fields))[EXTENSIONS][1]
    reader = der.DerReader(der.read_single(value, der.SEQUENCE, what="extensions"))
    items = []
    while not reader.at_end():
        items.append(der.tlv(*reader.read()))
    return items


def extensions_field(*extensions: bytes) -> bytes:
    """[3] EXPLICIT Extensions around ``extensions`` (complete Extension TLVs)."""
    return der.tlv(0xA3, der.sequence(*extensions))


def extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = der.tlv(0x01, b"\xff") if critical else b""
    return der.sequence(der.encode_oid(oid), flag, der.tlv(der.OCTET_STRING, value))


#: subjectAltName holding an x400Address, a GeneralName cryptography does not implement.
SAN_WITH_X400_ADDRESS = extension("2.5.29.17", der.sequence(der.tlv(0xA3, der.sequence())))
