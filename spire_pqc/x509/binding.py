"""The SvidBinding extension (``id-spire-pqc-svid-binding``, docs/formats.md)::

    SvidBinding ::= SEQUENCE {
      version            INTEGER (1),
      issuerKeyId        OCTET STRING,          -- SHA-256 of the intermediate's SPKI DER
      signatureAlgorithm AlgorithmIdentifier,   -- id-ml-dsa-65, parameters absent
      signature          BIT STRING }           -- ML-DSA-65, context "spire-pqc/svid-binding/v1", over
                                                -- DER(SEQUENCE { spiffeId UTF8String, subjectPublicKeyInfo })

It proves, under a post-quantum signature, that the trust domain's PQC CA saw SPIRE issue this
SPIFFE ID to this classical key. Parsing is strict DER with bounded sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509

from spire_pqc._internal import der
from spire_pqc.crypto.mldsa import SIGNATURE_LEN, MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import BindingError, InvalidSignatureError, ParseError
from spire_pqc.x509.memo import MEMO
from spire_pqc.x509.oids import ID_ML_DSA_65

CONTEXT = b"spire-pqc/svid-binding/v1"
VERSION = 1
KEY_ID_LEN = 32
MAX_SPKI_LEN = 16 * 1024
MAX_EXTENSION_LEN = 4096
_ALGORITHM = der.sequence(der.encode_oid(ID_ML_DSA_65))


@dataclass(frozen=True)
class SvidBinding:
    """A parsed SvidBinding: the signer's key id and the ML-DSA-65 signature."""

    issuer_key_id: bytes
    signature: bytes

    def encode(self) -> bytes:
        """DER of the extension value (the extnValue OCTET STRING's content)."""
        return der.sequence(
            der.integer(VERSION),
            der.tlv(der.OCTET_STRING, self.issuer_key_id),
            _ALGORITHM,
            der.tlv(der.BIT_STRING, b"\x00" + self.signature),
        )


def signed_message(spiffe_id: str, subject_public_key_info: bytes) -> bytes:
    """DER(SEQUENCE { spiffeId UTF8String, subjectPublicKeyInfo }) — the bytes the binding signs."""
    if len(subject_public_key_info) > MAX_SPKI_LEN:
        raise BindingError(f"subjectPublicKeyInfo larger than {MAX_SPKI_LEN} bytes", spiffe_id=spiffe_id)
    # The SPKI is embedded as-is (it is already a DER SEQUENCE), never re-encoded.
    return der.sequence(der.tlv(der.UTF8_STRING, spiffe_id.encode("utf-8")), subject_public_key_info)


def sign_binding(key: MLDSA65PrivateKey, spiffe_id: str, subject_public_key_info: bytes) -> SvidBinding:
    """Sign a binding of ``spiffe_id`` to the classical key ``subject_public_key_info``."""
    message = signed_message(spiffe_id, subject_public_key_info)
    return SvidBinding(key.public_key().key_id(), key.sign(message, context=CONTEXT))


def parse_binding(value: bytes) -> SvidBinding:
    """Parse an extension value; raises ParseError for anything that is not exactly a v1 SvidBinding."""
    if len(value) > MAX_EXTENSION_LEN:
        raise ParseError(f"SvidBinding: {len(value)} bytes exceeds the {MAX_EXTENSION_LEN}-byte limit")
    reader = der.DerReader(der.read_single(value, der.SEQUENCE, what="SvidBinding"), what="SvidBinding")
    version = der.read_integer(reader.expect(der.INTEGER, "version"), what="SvidBinding.version")
    if version != VERSION:
        raise ParseError(f"SvidBinding: unsupported version {version}")
    key_id = reader.expect(der.OCTET_STRING, "issuerKeyId")
    if len(key_id) != KEY_ID_LEN:
        raise ParseError(f"SvidBinding: issuerKeyId must be {KEY_ID_LEN} bytes (SHA-256), got {len(key_id)}")
    algorithm = reader.expect(der.SEQUENCE, "signatureAlgorithm")
    if der.tlv(der.SEQUENCE, algorithm) != _ALGORITHM:
        raise ParseError("SvidBinding: signatureAlgorithm must be id-ml-dsa-65 with parameters absent")
    bits = reader.expect(der.BIT_STRING, "signature")
    reader.expect_end()
    if not bits or bits[0] != 0:
        raise ParseError("SvidBinding: signature BIT STRING must have 0 unused bits")
    if len(bits) - 1 != SIGNATURE_LEN:
        raise ParseError(
            f"SvidBinding: ML-DSA-65 signature must be {SIGNATURE_LEN} bytes, got {len(bits) - 1}"
        )
    return SvidBinding(key_id, bits[1:])


def verify_binding(
    binding: SvidBinding,
    spiffe_id: str,
    subject_public_key_info: bytes,
    trusted_intermediates: Iterable[MLDSA65PublicKey],
    *,
    carrier: x509.Certificate | None = None,
) -> MLDSA65PublicKey:
    """Verify ``binding`` under one of ``trusted_intermediates``; return the intermediate key used.

    ``carrier`` is the certificate the binding came from: with it, a success is remembered for that
    certificate object and key (:mod:`spire_pqc.x509.memo`). Raises BindingError saying whether the
    signer is unknown or the signature is wrong.
    """
    by_id = {key.key_id(): key for key in trusted_intermediates}
    signer = by_id.get(binding.issuer_key_id)
    if signer is None:
        raise BindingError(
            f"signed by an untrusted intermediate (issuerKeyId {binding.issuer_key_id.hex()[:16]}…)",
            spiffe_id=spiffe_id,
        )

    def check() -> bool:
        try:
            signer.verify(
                binding.signature, signed_message(spiffe_id, subject_public_key_info), context=CONTEXT
            )
        except InvalidSignatureError:
            return False
        return True

    if carrier is None:
        ok = check()
    else:
        ok = MEMO.verified(
            carrier, signer, purpose="svid-binding", expires=carrier.not_valid_after_utc, check=check
        )
    if not ok:
        raise BindingError(
            "ML-DSA-65 signature does not verify over this SPIFFE ID and public key", spiffe_id=spiffe_id
        )
    return signer
