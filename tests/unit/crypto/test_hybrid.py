"""X25519MLKEM768 against a hand-built reference (kyber-py + cryptography X25519)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from spire_pqc.crypto.hybrid import (
    CLIENT_SHARE_LEN,
    SERVER_SHARE_LEN,
    X25519MLKEM768PrivateKey,
    x25519mlkem768_encapsulate,
)
from spire_pqc.errors import InvalidKeyError
from tests.unit.crypto import _reference as ref

# Every test runs on both PQ backends (tests/_backends.py).
pytestmark = pytest.mark.usefixtures("pq_backend")

ROUNDS = 5


# --- X25519MLKEM768 ------------------------------------------------------------------------------


def test_share_layout_and_sizes() -> None:
    mlkem_seed, x_private = os.urandom(64), os.urandom(32)
    client = X25519MLKEM768PrivateKey.from_seeds(mlkem_seed, x_private)
    share = client.client_share()
    assert len(share) == CLIENT_SHARE_LEN == 1216
    # client share = ML-KEM ek || X25519 public key (ML-KEM first, only in this group)
    assert share[:1184] == ref.mlkem_keygen(mlkem_seed)[0]
    assert share[1184:] == ref.x25519_public(X25519PrivateKey.from_private_bytes(x_private))
    secret, server_share = x25519mlkem768_encapsulate(share)
    assert len(server_share) == SERVER_SHARE_LEN == 1120
    assert len(secret) == 64


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_reference_client_with_our_server(round_: int) -> None:
    client = ref.ReferenceHybridClient.generate()
    secret, server_share = x25519mlkem768_encapsulate(client.share())
    assert client.finish(server_share) == secret
    # secret = ss_ML-KEM || ss_X25519, checked part by part
    assert secret[:32] == ref.mlkem_decaps(client.dk, server_share[:1088])
    assert secret[32:] == ref.x25519(client.x25519, server_share[1088:])


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_our_client_with_reference_server(round_: int) -> None:
    client = X25519MLKEM768PrivateKey.generate()
    secret, server_share = ref.reference_hybrid_server(client.client_share())
    assert client.decapsulate(server_share) == secret


def test_hybrid_rejects_bad_shares() -> None:
    client = X25519MLKEM768PrivateKey.generate()
    share = client.client_share()
    with pytest.raises(InvalidKeyError, match="client share must be 1216"):
        x25519mlkem768_encapsulate(share[:-1])
    with pytest.raises(InvalidKeyError, match="server share must be 1120"):
        client.decapsulate(bytes(1119))
    # The encapsulation key inside the share gets the FIPS 203 modulus check.
    bad_ek = b"\xff\xff\xff" + share[3:]
    with pytest.raises(InvalidKeyError, match="modulus"):
        x25519mlkem768_encapsulate(bad_ek)
    # An all-zero X25519 public key gives an all-zero secret: RFC 8446 §7.4.2 says abort.
    _, server_share = x25519mlkem768_encapsulate(share)
    with pytest.raises(InvalidKeyError, match="X25519"):
        client.decapsulate(server_share[:1088] + bytes(32))
    with pytest.raises(InvalidKeyError, match="X25519"):
        x25519mlkem768_encapsulate(share[:1184] + bytes(32))


@pytest.mark.parametrize("x25519_len", [0, 31, 33, 64])
def test_from_seeds_refuses_an_x25519_key_that_is_not_32_bytes(x25519_len: int) -> None:
    """Regression (issue 9): cryptography's ValueError escaped from_seeds untyped."""
    with pytest.raises(InvalidKeyError, match=f"X25519 private key must be 32 bytes, got {x25519_len}"):
        X25519MLKEM768PrivateKey.from_seeds(os.urandom(64), os.urandom(x25519_len))
    with pytest.raises(InvalidKeyError, match="seed must be 64 bytes"):
        X25519MLKEM768PrivateKey.from_seeds(os.urandom(63), os.urandom(32))
    x25519 = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    key = X25519MLKEM768PrivateKey.from_seeds(bytes(64), bytes(range(32)))
    assert key.client_share()[-32:] == x25519.public_key().public_bytes_raw()
