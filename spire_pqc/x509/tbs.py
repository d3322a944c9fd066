"""ML-DSA-65-signed certificates, signed through the selected PQ backend.

cryptography's ``CertificateBuilder`` signs only with its own OpenSSL key objects: a CA on the liboqs
backend would still sign every certificate with OpenSSL, and the builder needs the issuer's key object
re-derived from its seed (a full ML-DSA-65 key generation) for each certificate. :class:`TbsBuilder`
instead encodes the TBSCertificate itself (RFC 5280 §4.1, DER), takes the encodings of names and
extension values from cryptography (``Name.public_bytes``, ``ExtensionType.public_bytes``), signs the
bytes with :meth:`MLDSA65PrivateKey.sign` (empty context, RFC 9881) on whichever backend the process
chose, and parses the result with cryptography, so callers get an ordinary ``x509.Certificate``.
For the same fields the TBSCertificate is byte for byte what cryptography's builder encodes
(``tests/unit/x509/test_tbs.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import NamedTuple

from cryptography import x509

from spire_pqc._internal import der
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import ParseError
from spire_pqc.x509.oids import ID_ML_DSA_65

_VERSION_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_ML_DSA_65_ALGORITHM = der.sequence(der.encode_oid(ID_ML_DSA_65))  # parameters absent (RFC 9881)
_TRUE = bytes.fromhex("0101ff")
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_EXTENSIONS = 0xA3  # [3] EXPLICIT
_MAX_SERIAL_BITS = 159  # RFC 5280 §4.1.2.2: at most 20 octets, positive


@functools.lru_cache(maxsize=64)
def _oid(dotted: str) -> bytes:
    return der.encode_oid(dotted)


def _time(when: dt.datetime) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime for 1950-2049, GeneralizedTime otherwise; whole seconds, Zulu."""
    utc = when.astimezone(dt.UTC) if when.tzinfo is not None else when
    if 1950 <= utc.year < 2050:
        return der.tlv(_UTC_TIME, utc.strftime("%y%m%d%H%M%SZ").encode())
    return der.tlv(_GENERALIZED_TIME, f"{utc.year:04d}{utc.strftime('%m%d%H%M%S')}Z".encode())


def encode_extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    """``Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }``
    from the DER of the extension's value."""
    return der.sequence(_oid(oid), _TRUE if critical else b"", der.tlv(der.OCTET_STRING, value))


def extension_der(extension: x509.ExtensionType, critical: bool) -> bytes:
    """An ``Extension`` with cryptography's encoding of ``extension``'s value."""
    return encode_extension(extension.oid.dotted_string, extension.public_bytes(), critical=critical)


def spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING contents of a SubjectPublicKeyInfo (for key identifiers)."""
    reader = der.DerReader(der.read_single(spki, der.SEQUENCE, what="SubjectPublicKeyInfo"))
    reader.expect(der.SEQUENCE, "algorithm")
    bits = reader.expect(der.BIT_STRING, "subjectPublicKey")
    reader.expect_end()
    if not bits or bits[0] != 0:
        raise ParseError("SubjectPublicKeyInfo: subjectPublicKey must have 0 unused bits")
    return bits[1:]


class TbsBuilder(NamedTuple):
    """An immutable certificate template: each method returns a new builder (like cryptography's).

    A NamedTuple rather than a frozen dataclass: ``_replace`` costs a microsecond, where
    ``dataclasses.replace`` cost a CA ~0.25 ms per issuance (`spire-pqc bench ca` profile)."""

    issuer: bytes = b""  # Name DER
    subject: bytes = b""  # Name DER
    spki: bytes = b""
    serial: int = 0
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    extensions: tuple[bytes, ...] = ()
    extension_oids: tuple[str, ...] = ()

    def issuer_name(self, name: x509.Name | bytes) -> TbsBuilder:
        return self._replace(issuer=name if isinstance(name, bytes) else name.public_bytes())

    def subject_name(self, name: x509.Name | bytes) -> TbsBuilder:
        return self._replace(subject=name if isinstance(name, bytes) else name.public_bytes())

    def public_key_spki(self, spki: bytes) -> TbsBuilder:
        if spki[:1] != b"\x30":
            raise ValueError("not a SubjectPublicKeyInfo (DER SEQUENCE)")
        return self._replace(spki=bytes(spki))

    def serial_number(self, serial: int) -> TbsBuilder:
        if serial <= 0 or serial.bit_length() > _MAX_SERIAL_BITS:
            raise ValueError(f"serial number must be positive and at most {_MAX_SERIAL_BITS} bits")
        return self._replace(serial=serial)

    def validity(self, not_before: dt.datetime, not_after: dt.datetime) -> TbsBuilder:
        if not_after < not_before:
            raise ValueError("notAfter is before notBefore")
        return self._replace(not_before=not_before, not_after=not_after)

    def add_extension(self, extension: x509.ExtensionType, *, critical: bool) -> TbsBuilder:
        return self.add_extension_der(extension.oid.dotted_string, extension_der(extension, critical))

    def add_extension_der(self, oid: str, encoded: bytes) -> TbsBuilder:
        """Add an already encoded ``Extension`` (for ones that are the same in every certificate)."""
        if oid in self.extension_oids:
            raise ValueError(f"extension {oid} already added")
        return self._replace(
            extensions=(*self.extensions, encoded), extension_oids=(*self.extension_oids, oid)
        )

    def tbs_certificate(self) -> bytes:
        missing = [
            name
            for name, value in (("issuer", self.issuer), ("subject", self.subject), ("public key", self.spki))
            if not value
        ]
        if missing or not self.serial or self.not_before is None or self.not_after is None:
            raise ValueError(f"certificate template incomplete: {', '.join(missing) or 'serial or validity'}")
        parts: Sequence[bytes] = (
            _VERSION_3,
            der.integer(self.serial),
            _ML_DSA_65_ALGORITHM,
            self.issuer,
            der.sequence(_time(self.not_before), _time(self.not_after)),
            self.subject,
            self.spki,
        )
        if self.extensions:
            parts = (*parts, der.tlv(_EXTENSIONS, der.sequence(*self.extensions)))
        return der.sequence(*parts)

    def sign(self, key: MLDSA65PrivateKey) -> x509.Certificate:
        """The certificate, signed by ``key`` on this process's PQ backend (FIPS 204, empty context)."""
        tbs = self.tbs_certificate()
        signature = key.sign(tbs, context=b"")
        encoded = der.sequence(tbs, _ML_DSA_65_ALGORITHM, der.tlv(der.BIT_STRING, b"\x00" + signature))
        return x509.load_der_x509_certificate(encoded)
