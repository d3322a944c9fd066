"""Encrypted PKCS#8 (RFC 8018 PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC) around *any* inner DER.

cryptography encrypts only keys it can load, so a private key of an algorithm it does not know
(what an operator might paste into a key file, or an attacker might plant) has to be wrapped by hand.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from spire_pqc._internal import der
from spire_pqc.crypto.keys import pem_encode

ID_PBES2 = "1.2.840.113549.1.5.13"
ID_PBKDF2 = "1.2.840.113549.1.5.12"
ID_HMAC_SHA256 = "1.2.840.113549.2.9"
ID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
#: An OID under the private enterprise arc that no key type uses.
UNKNOWN_KEY_ALGORITHM = "1.3.6.1.4.1.99999.1"


def unknown_algorithm_pkcs8() -> bytes:
    """OneAsymmetricKey { version 0, AlgorithmIdentifier { UNKNOWN_KEY_ALGORITHM }, privateKey }."""
    private_key = der.tlv(der.OCTET_STRING, der.tlv(der.OCTET_STRING, os.urandom(32)))
    return der.sequence(der.integer(0), der.sequence(der.encode_oid(UNKNOWN_KEY_ALGORITHM)), private_key)


def encrypted_pem(inner: bytes, password: bytes, *, iterations: int = 2048) -> bytes:
    """``-----BEGIN ENCRYPTED PRIVATE KEY-----`` around ``inner`` encrypted with ``password``."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password, salt, iterations, 32)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(inner) + padder.finalize()) + encryptor.finalize()
    prf = der.sequence(der.encode_oid(ID_HMAC_SHA256), der.tlv(der.NULL, b""))
    kdf = der.sequence(
        der.encode_oid(ID_PBKDF2),
        der.sequence(der.tlv(der.OCTET_STRING, salt), der.integer(iterations), prf),
    )
    scheme = der.sequence(der.encode_oid(ID_AES256_CBC), der.tlv(der.OCTET_STRING, iv))
    algorithm = der.sequence(der.encode_oid(ID_PBES2), der.sequence(kdf, scheme))
    return pem_encode("ENCRYPTED PRIVATE KEY", der.sequence(algorithm, der.tlv(der.OCTET_STRING, ciphertext)))
