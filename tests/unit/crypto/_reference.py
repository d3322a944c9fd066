"""Hand-built reference hybrids from independent parts, for cross-checking spire_pqc.crypto.hybrid.

ML-KEM-768 comes from kyber-py 1.2.0 (pure-Python FIPS 203), X25519 from cryptography, hashing
from hashlib. Layouts follow draft-ietf-tls-ecdhe-mlkem (X25519MLKEM768) (X25519MLKEM768):

* X25519MLKEM768: client share = ek (1184) || X25519 pk (32); server share = ct (1088) || X25519 pk
  (32); shared secret = ss_ML-KEM || ss_X25519.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kyber_py.ml_kem import ML_KEM_768


def x25519_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519(key: X25519PrivateKey, peer: bytes) -> bytes:
    return key.exchange(X25519PublicKey.from_public_bytes(peer))


def mlkem_keygen(seed: bytes) -> tuple[bytes, bytes]:
    """kyber-py ``(ek, dk)`` for the 64-byte seed d || z."""
    ek, dk = ML_KEM_768.key_derive(seed)
    return bytes(ek), bytes(dk)


def mlkem_encaps(ek: bytes, m: bytes | None = None) -> tuple[bytes, bytes]:
    """kyber-py ``(shared secret, ciphertext)``; ``m`` fixes the randomness (FIPS 203 Alg. 17)."""
    if m is None:
        shared, ct = ML_KEM_768.encaps(ek)
    else:
        shared, ct = ML_KEM_768._encaps_internal(ek, m)
    return bytes(shared), bytes(ct)


def mlkem_decaps(dk: bytes, ct: bytes) -> bytes:
    return bytes(ML_KEM_768.decaps(dk, ct))


# --- X25519MLKEM768 ------------------------------------------------------------------------------


@dataclass
class ReferenceHybridClient:
    ek: bytes
    dk: bytes
    x25519: X25519PrivateKey

    @classmethod
    def generate(cls) -> ReferenceHybridClient:
        ek, dk = mlkem_keygen(os.urandom(64))
        return cls(ek, dk, X25519PrivateKey.generate())

    def share(self) -> bytes:
        return self.ek + x25519_public(self.x25519)

    def finish(self, server_share: bytes) -> bytes:
        ct, peer = server_share[:1088], server_share[1088:]
        return mlkem_decaps(self.dk, ct) + x25519(self.x25519, peer)


def reference_hybrid_server(client_share: bytes) -> tuple[bytes, bytes]:
    """Return ``(shared secret, server share)`` for a client share."""
    ek, peer = client_share[:1184], client_share[1184:]
    ss_m, ct = mlkem_encaps(ek)
    ephemeral = X25519PrivateKey.generate()
    return ss_m + x25519(ephemeral, peer), ct + x25519_public(ephemeral)
