"""RFC 9763 RelatedCertificate extension (id-pe-relatedCert, 1.3.6.1.5.5.7.1.36)::

    RelatedCertificate ::= SEQUENCE { hashAlgorithm DigestAlgorithmIdentifier, hashValue OCTET STRING }

hashValue is the hash of the entire DER of the related certificate. The related certificate here is
the classical SVID leaf, signed with ECDSA/RSA, but we always use SHA-256 as the RFC's examples do.
"""

from __future__ import annotations

import hashlib

from spire_pqc._internal import der
from spire_pqc.errors import ParseError
from spire_pqc.x509.oids import ID_SHA256

_SHA256_ALGORITHM = der.sequence(der.encode_oid(ID_SHA256))


def encode_related_certificate(related_der: bytes) -> bytes:
    return der.sequence(_SHA256_ALGORITHM, der.tlv(der.OCTET_STRING, hashlib.sha256(related_der).digest()))


def parse_related_certificate(value: bytes) -> bytes:
    """Return the SHA-256 hash value; only SHA-256 (parameters absent) is accepted."""
    reader = der.DerReader(
        der.read_single(value, der.SEQUENCE, what="RelatedCertificate"), what="RelatedCertificate"
    )
    algorithm = reader.expect(der.SEQUENCE, "hashAlgorithm")
    if der.tlv(der.SEQUENCE, algorithm) != _SHA256_ALGORITHM:
        raise ParseError("RelatedCertificate: hashAlgorithm must be SHA-256 with parameters absent")
    digest = reader.expect(der.OCTET_STRING, "hashValue")
    reader.expect_end()
    if len(digest) != 32:
        raise ParseError(f"RelatedCertificate: SHA-256 hashValue must be 32 bytes, got {len(digest)}")
    return digest


def related_hash(related_der: bytes) -> bytes:
    return hashlib.sha256(related_der).digest()
