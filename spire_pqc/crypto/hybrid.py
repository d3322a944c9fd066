"""Hybrid key exchange: X25519MLKEM768 exactly as TLS defines it.

X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, NamedGroup 0x11EC):
  client share  = ML-KEM-768 encapsulation key (1184) || X25519 public key (32)   = 1216 bytes
  server share  = ML-KEM-768 ciphertext (1088)       || X25519 public key (32)    = 1120 bytes
  shared secret = ss_ML-KEM (32) || ss_X25519 (32)                                 = 64 bytes
ML-KEM comes first in this group only. The X25519 checks of RFC 8446 apply (an all-zero result is
rejected), and the encapsulation key passes the FIPS 203 §7.2 check.
"""

from __future__ import annotations

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
