"""Hybrid key exchange: X25519MLKEM768 exactly as TLS defines it, and X-Wing.

X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, NamedGroup 0x11EC):
  client share  = ML-KEM-768 encapsulation key (1184) || X25519 public key (32)   = 1216 bytes
  server share  = ML-KEM-768 ciphertext (1088)       || X25519 public key (32)    = 1120 bytes
  shared secret = ss_ML-KEM (32) || ss_X25519 (32)                                 = 64 bytes
ML-KEM comes first in this group only. The X25519 checks of RFC 8446 apply (an all-zero result is
rejected), and the encapsulation key passes the FIPS 203 §7.2 check.

X-Wing (draft-connolly-cfrg-xwing-kem): a 32-byte seed expands with SHAKE-256 into the ML-KEM seed
and the X25519 key; the secret is SHA3-256(ss_M || ss_X || ct_X || pk_X || label).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from spire_pqc.crypto.mlkem import CIPHERTEXT_LEN, PUBLIC_KEY_LEN, MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidKeyError

X25519_LEN = 32
CLIENT_SHARE_LEN = PUBLIC_KEY_LEN + X25519_LEN
SERVER_SHARE_LEN = CIPHERTEXT_LEN + X25519_LEN
SHARED_SECRET_LEN = 64
TLS_GROUP_ID = 0x11EC
TLS_GROUP_NAME = "X25519MLKEM768"


def _x25519(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # cryptography raises on an all-zero shared secret (RFC 8446 §7.4.2)
        raise InvalidKeyError(f"X25519 exchange rejected: {exc}") from exc


def _x25519_raw(key: X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class X25519MLKEM768PrivateKey:
    """The client side of an X25519MLKEM768 exchange (ephemeral)."""

    __slots__ = ("_mlkem", "_x25519")

    def __init__(self, mlkem: MLKEM768PrivateKey, x25519: X25519PrivateKey) -> None:
        self._mlkem = mlkem
        self._x25519 = x25519

    @classmethod
    def generate(cls) -> X25519MLKEM768PrivateKey:
        return cls(MLKEM768PrivateKey.generate(), X25519PrivateKey.generate())

    @classmethod
    def from_seeds(cls, mlkem_seed: bytes, x25519_private: bytes) -> X25519MLKEM768PrivateKey:
        """From the 64-byte ML-KEM-768 seed (d || z) and the 32-byte X25519 private key."""
        if len(x25519_private) != X25519_LEN:
            raise InvalidKeyError(f"X25519 private key must be {X25519_LEN} bytes, got {len(x25519_private)}")
        return cls(
            MLKEM768PrivateKey.from_seed(mlkem_seed), X25519PrivateKey.from_private_bytes(x25519_private)
        )

    def client_share(self) -> bytes:
        return self._mlkem.public_key().raw() + _x25519_raw(self._x25519)

    def decapsulate(self, server_share: bytes) -> bytes:
        if len(server_share) != SERVER_SHARE_LEN:
            raise InvalidKeyError(
                f"X25519MLKEM768 server share must be {SERVER_SHARE_LEN} bytes, got {len(server_share)}"
            )
        ss_mlkem = self._mlkem.decapsulate(server_share[:CIPHERTEXT_LEN])
        ss_x25519 = _x25519(self._x25519, server_share[CIPHERTEXT_LEN:])
        return ss_mlkem + ss_x25519


def x25519mlkem768_encapsulate(client_share: bytes) -> tuple[bytes, bytes]:
    """The server side: return ``(shared_secret (64 B), server_share (1120 B))``."""
    if len(client_share) != CLIENT_SHARE_LEN:
        raise InvalidKeyError(
            f"X25519MLKEM768 client share must be {CLIENT_SHARE_LEN} bytes, got {len(client_share)}"
        )
    encapsulation_key = MLKEM768PublicKey(client_share[:PUBLIC_KEY_LEN])
    ss_mlkem, ciphertext = encapsulation_key.encapsulate()
    ephemeral = X25519PrivateKey.generate()
    ss_x25519 = _x25519(ephemeral, client_share[PUBLIC_KEY_LEN:])
    return ss_mlkem + ss_x25519, ciphertext + _x25519_raw(ephemeral)


# --- X-Wing ------------------------------------------------------------------------------------

XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")  # ASCII \./ /^\
XWING_SEED_LEN = 32
XWING_PUBLIC_LEN = PUBLIC_KEY_LEN + X25519_LEN
XWING_CIPHERTEXT_LEN = CIPHERTEXT_LEN + X25519_LEN


def _xwing_combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


class XWingPrivateKey:
    """An X-Wing decapsulation key, held as its 32-byte seed."""

    __slots__ = ("_mlkem", "_pk_x", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != XWING_SEED_LEN:
            raise InvalidKeyError(f"X-Wing seed must be {XWING_SEED_LEN} bytes, got {len(seed)}")
        self._seed = bytes(seed)
        expanded = hashlib.shake_256(self._seed).digest(96)
        self._mlkem = MLKEM768PrivateKey.from_seed(expanded[:64])
        self._x25519 = X25519PrivateKey.from_private_bytes(expanded[64:96])
        self._pk_x = _x25519_raw(self._x25519)

    @classmethod
    def generate(cls) -> XWingPrivateKey:
        return cls(os.urandom(XWING_SEED_LEN))

    def seed(self) -> bytes:
        return self._seed

    def public_bytes(self) -> bytes:
        return self._mlkem.public_key().raw() + self._pk_x

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != XWING_CIPHERTEXT_LEN:
            raise InvalidKeyError(
                f"X-Wing ciphertext must be {XWING_CIPHERTEXT_LEN} bytes, got {len(ciphertext)}"
            )
        ct_m, ct_x = ciphertext[:CIPHERTEXT_LEN], ciphertext[CIPHERTEXT_LEN:]
        ss_m = self._mlkem.decapsulate(ct_m)
        ss_x = _x25519(self._x25519, ct_x)
        return _xwing_combine(ss_m, ss_x, ct_x, self._pk_x)


def xwing_encapsulate(public: bytes) -> tuple[bytes, bytes]:
    """Return ``(shared_secret (32 B), ciphertext (1120 B))`` for an X-Wing public key."""
    if len(public) != XWING_PUBLIC_LEN:
        raise InvalidKeyError(f"X-Wing public key must be {XWING_PUBLIC_LEN} bytes, got {len(public)}")
    pk_m, pk_x = public[:PUBLIC_KEY_LEN], public[PUBLIC_KEY_LEN:]
    ss_m, ct_m = MLKEM768PublicKey(pk_m).encapsulate()
    ephemeral = X25519PrivateKey.generate()
    ct_x = _x25519_raw(ephemeral)
    ss_x = _x25519(ephemeral, pk_x)
    return _xwing_combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x
