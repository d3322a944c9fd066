"""ML-KEM-768 (FIPS 203) keys: generation, seed form (d || z), SPKI/PKCS#8 (RFC 9935), KEM operations."""

from __future__ import annotations

import hashlib
import os

from spire_pqc.crypto import _backend
from spire_pqc.crypto._fips203 import check_encapsulation_key
from spire_pqc.crypto.keys import (
    MLKEM768_LAYOUT,
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
from spire_pqc.errors import InvalidKeyError

SEED_LEN = _backend.MLKEM768_SEED_LEN
PUBLIC_KEY_LEN = _backend.MLKEM768_PUBLIC_LEN
CIPHERTEXT_LEN = _backend.MLKEM768_CIPHERTEXT_LEN
SHARED_SECRET_LEN = _backend.SHARED_SECRET_LEN
ALGORITHM = "ML-KEM-768"


class MLKEM768PublicKey:
    """An ML-KEM-768 encapsulation key. Construction runs the FIPS 203 §7.2 input check."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        check_encapsulation_key(bytes(raw))
        self._raw = bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MLKEM768PublicKey:
        return cls(raw)

    @classmethod
    def _derived(cls, raw: bytes) -> MLKEM768PublicKey:
        """A key the backend just derived from our own seed: the §7.2 input check (for keys from
        outside, ~90 µs in Python) cannot fail, so it is skipped on this path only."""
        key = cls.__new__(cls)
        key._raw = bytes(raw)
        return key

    @classmethod
    def from_spki(cls, der: bytes) -> MLKEM768PublicKey:
        return cls(decode_spki(MLKEM768_LAYOUT, der))

    @classmethod
    def from_pem(cls, data: bytes) -> MLKEM768PublicKey:
        return cls.from_spki(pem_decode_one(data, ("PUBLIC KEY",))[1])

    def raw(self) -> bytes:
        return self._raw

    def spki(self) -> bytes:
        return encode_spki(MLKEM768_LAYOUT, self._raw)

    def pem(self) -> bytes:
        return pem_encode("PUBLIC KEY", self.spki())

    def key_id(self) -> bytes:
        return hashlib.sha256(self.spki()).digest()

    def encapsulate(self) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, ciphertext)``: 32 and 1088 bytes."""
        with timed("encaps", ALGORITHM):
            return _backend.backend().mlkem768_encapsulate(self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MLKEM768PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"MLKEM768PublicKey(key_id={self.key_id()[:8].hex()})"


class MLKEM768PrivateKey:
    """An ML-KEM-768 decapsulation key, held as its 64-byte seed d || z."""

    __slots__ = ("_decapsulator", "_public", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise InvalidKeyError(f"ML-KEM-768 seed must be {SEED_LEN} bytes (d || z), got {len(seed)}")
        self._seed = bytes(seed)
        public, self._decapsulator = _backend.backend().mlkem768_from_seed(self._seed)
        self._public = MLKEM768PublicKey._derived(public)

    @classmethod
    def generate(cls) -> MLKEM768PrivateKey:
        with timed("keygen", ALGORITHM):
            return cls(os.urandom(SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> MLKEM768PrivateKey:
        return cls(seed)

    @classmethod
    def from_pkcs8(cls, der: bytes) -> MLKEM768PrivateKey:
        return cls(decode_pkcs8(MLKEM768_LAYOUT, der))

    @classmethod
    def from_pem(cls, data: bytes, *, password: bytes | None = None) -> MLKEM768PrivateKey:
        return cls.from_pkcs8(private_der_from_pem(data, password))

    def seed(self) -> bytes:
        return self._seed

    def public_key(self) -> MLKEM768PublicKey:
        return self._public

    def pkcs8(self) -> bytes:
        return encode_pkcs8(MLKEM768_LAYOUT, self._seed)

    def pem(self, encryption: KeyEncryption) -> bytes:
        return private_pem(self.pkcs8(), encryption)

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """FIPS 203 decapsulation (implicit rejection: a bad ciphertext yields a pseudo-random secret)."""
        if len(ciphertext) != CIPHERTEXT_LEN:
            raise InvalidKeyError(
                f"ML-KEM-768 ciphertext must be {CIPHERTEXT_LEN} bytes, got {len(ciphertext)}"
            )
        with timed("decaps", ALGORITHM):
            return bytes(self._decapsulator.decapsulate(bytes(ciphertext)))

    def __repr__(self) -> str:
        return f"MLKEM768PrivateKey(public={self._public!r})"
