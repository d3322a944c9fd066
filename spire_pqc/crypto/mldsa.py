"""ML-DSA-65 (FIPS 204) keys: generation, seed form, SPKI/PKCS#8 (RFC 9881), sign and verify.

Every signature is made and checked with an explicit FIPS 204 context string; X.509 uses the empty
context, each spire-pqc protocol message its own constant (docs/formats.md).
"""

from __future__ import annotations

import hashlib
import os

from spire_pqc.crypto import _backend
from spire_pqc.crypto.keys import (
    MLDSA65_LAYOUT,
    KeyEncryption,
    decode_pkcs8,
    decode_spki,
    encode_pkcs8,
    encode_spki,
    pem_decode_one,
    pem_encode,
    private_der_from_pem,
    private_pem,
)
from spire_pqc.crypto.timing import timed
from spire_pqc.errors import InvalidContextError, InvalidKeyError, InvalidSignatureError

SEED_LEN = _backend.MLDSA65_SEED_LEN
PUBLIC_KEY_LEN = _backend.MLDSA65_PUBLIC_LEN
SIGNATURE_LEN = _backend.MLDSA65_SIGNATURE_LEN
ALGORITHM = "ML-DSA-65"


def _check_context(context: bytes) -> bytes:
    if not isinstance(context, bytes | bytearray):
        raise TypeError("context must be bytes")
    if len(context) > _backend.MAX_CONTEXT_LEN:
        raise InvalidContextError(
            f"FIPS 204 context strings are at most {_backend.MAX_CONTEXT_LEN} bytes, got {len(context)}"
        )
    return bytes(context)


class MLDSA65PublicKey:
    """An ML-DSA-65 public key (1952 bytes)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != PUBLIC_KEY_LEN:
            raise InvalidKeyError(f"ML-DSA-65 public key must be {PUBLIC_KEY_LEN} bytes, got {len(raw)}")
        self._raw = bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MLDSA65PublicKey:
        return cls(raw)

    @classmethod
    def from_spki(cls, der: bytes) -> MLDSA65PublicKey:
        return cls(decode_spki(MLDSA65_LAYOUT, der))

    @classmethod
    def from_pem(cls, data: bytes) -> MLDSA65PublicKey:
        return cls.from_spki(pem_decode_one(data, ("PUBLIC KEY",))[1])

    def raw(self) -> bytes:
        return self._raw

    def spki(self) -> bytes:
        return encode_spki(MLDSA65_LAYOUT, self._raw)

    def pem(self) -> bytes:
        return pem_encode("PUBLIC KEY", self.spki())

    def key_id(self) -> bytes:
        """SHA-256 of the SubjectPublicKeyInfo DER (the SvidBinding's issuerKeyId, docs/formats.md)."""
        return hashlib.sha256(self.spki()).digest()

    def verify(self, signature: bytes, message: bytes, *, context: bytes) -> None:
        """Raise InvalidSignatureError unless ``signature`` is valid for ``message`` under ``context``
        (InvalidContextError for a context longer than 255 bytes)."""
        ctx = _check_context(context)
        if len(signature) != SIGNATURE_LEN:
            raise InvalidSignatureError(
                f"ML-DSA-65 signature must be {SIGNATURE_LEN} bytes, got {len(signature)}"
            )
        with timed("verify", ALGORITHM):
            valid = _backend.backend().mldsa65_verify(self._raw, bytes(signature), bytes(message), ctx)
        if not valid:
            raise InvalidSignatureError("ML-DSA-65 signature does not verify")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MLDSA65PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"MLDSA65PublicKey(key_id={self.key_id()[:8].hex()})"


class MLDSA65PrivateKey:
    """An ML-DSA-65 private key, held as its 32-byte seed (the only serialised form)."""

    __slots__ = ("_public", "_seed", "_signer")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise InvalidKeyError(f"ML-DSA-65 seed must be {SEED_LEN} bytes, got {len(seed)}")
        self._seed = bytes(seed)
        public, self._signer = _backend.backend().mldsa65_from_seed(self._seed)
        self._public = MLDSA65PublicKey(public)

    @classmethod
    def generate(cls) -> MLDSA65PrivateKey:
        with timed("keygen", ALGORITHM):
            return cls(os.urandom(SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> MLDSA65PrivateKey:
        return cls(seed)

    @classmethod
    def from_pkcs8(cls, der: bytes) -> MLDSA65PrivateKey:
        return cls(decode_pkcs8(MLDSA65_LAYOUT, der))

    @classmethod
    def from_pem(cls, data: bytes, *, password: bytes | None = None) -> MLDSA65PrivateKey:
        return cls.from_pkcs8(private_der_from_pem(data, password))

    def seed(self) -> bytes:
        return self._seed

    def public_key(self) -> MLDSA65PublicKey:
        return self._public

    def pkcs8(self) -> bytes:
        """Seed-form PKCS#8 DER (unencrypted; 54 bytes)."""
        return encode_pkcs8(MLDSA65_LAYOUT, self._seed)

    def pem(self, encryption: KeyEncryption) -> bytes:
        """PKCS#8 PEM; ``encryption`` is NoEncryption() or PasswordEncryption(...), no default."""
        return private_pem(self.pkcs8(), encryption)

    def sign(self, message: bytes, *, context: bytes) -> bytes:
        """Hedged ML-DSA-65 signature over ``message`` with the FIPS 204 ``context`` (at most 255 bytes,
        else InvalidContextError)."""
        ctx = _check_context(context)
        with timed("sign", ALGORITHM):
            return self._signer.sign(bytes(message), ctx)

    def __repr__(self) -> str:
        return f"MLDSA65PrivateKey(public={self._public!r})"
