"""Cross-checks with independent pure-Python FIPS 203/204 implementations.

kyber-py 1.2.0 and dilithium-py 1.5.1 share no code with OpenSSL: keys, ciphertexts and signatures
made by one side must be accepted by the other, in both directions, context strings included.
dilithium-py signs in ~80 ms, so the ML-DSA rounds are few.
"""

from __future__ import annotations

import os

import pytest
from dilithium_py.ml_dsa import ML_DSA_65
from kyber_py.ml_kem import ML_KEM_768

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidSignatureError

# Every test runs on both PQ backends (tests/_backends.py).
pytestmark = pytest.mark.usefixtures("pq_backend")

KEM_ROUNDS = 8
DSA_CONTEXTS = [b"", b"spire-pqc/issue/v1", bytes(range(255))]


@pytest.mark.parametrize("round_", range(KEM_ROUNDS))
def test_mlkem_both_directions(round_: int) -> None:
    seed = os.urandom(64)
    ours = MLKEM768PrivateKey.from_seed(seed)
    ek, dk = ML_KEM_768.key_derive(seed)
    assert ours.public_key().raw() == ek

    # kyber-py encapsulates to our key; we decapsulate.
    shared, ct = ML_KEM_768.encaps(ours.public_key().raw())
    assert ours.decapsulate(ct) == shared

    # We encapsulate to kyber-py's key (parsed from its bytes); kyber-py decapsulates.
    shared2, ct2 = MLKEM768PublicKey(ek).encapsulate()
    assert ML_KEM_768.decaps(dk, ct2) == shared2

    # Implicit rejection (FIPS 203 Alg. 18): a modified ciphertext gives the same
    # pseudo-random J(z || c) on both sides, never the real secret.
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    rejected = ours.decapsulate(tampered)
    assert rejected == ML_KEM_768.decaps(dk, tampered)
    assert rejected != shared


@pytest.mark.parametrize("context", DSA_CONTEXTS, ids=["empty", "protocol", "255-bytes"])
def test_mldsa_dilithium_py_signs_we_verify(context: bytes) -> None:
    seed = os.urandom(32)
    pk, sk = ML_DSA_65.key_derive(seed)
    ours = MLDSA65PrivateKey.from_seed(seed)
    assert ours.public_key().raw() == pk

    message = os.urandom(100)
    signature = ML_DSA_65.sign(sk, message, ctx=context)
    ours.public_key().verify(signature, message, context=context)
    MLDSA65PublicKey(pk).verify(signature, message, context=context)
    with pytest.raises(InvalidSignatureError):
        ours.public_key().verify(signature, message, context=context + b"x" if len(context) < 255 else b"")
    # dilithium-py's deterministic variant is still plain ML-DSA to a verifier.
    deterministic = ML_DSA_65.sign(sk, message, ctx=context, deterministic=True)
    ours.public_key().verify(deterministic, message, context=context)


@pytest.mark.parametrize("context", DSA_CONTEXTS, ids=["empty", "protocol", "255-bytes"])
def test_mldsa_we_sign_dilithium_py_verifies(context: bytes) -> None:
    ours = MLDSA65PrivateKey.generate()
    pk = ours.public_key().raw()
    message = os.urandom(100)
    signature = ours.sign(message, context=context)
    assert ML_DSA_65.verify(pk, message, signature, ctx=context)
    assert not ML_DSA_65.verify(pk, message, signature, ctx=b"other")
    assert not ML_DSA_65.verify(pk, message + b"!", signature, ctx=context)


def test_mldsa_signatures_are_hedged() -> None:
    """Two signatures over the same input differ (FIPS 204 hedged signing); both verify elsewhere."""
    ours = MLDSA65PrivateKey.generate()
    first = ours.sign(b"same", context=b"c")
    second = ours.sign(b"same", context=b"c")
    assert first != second
    pk = ours.public_key().raw()
    assert ML_DSA_65.verify(pk, b"same", first, ctx=b"c")
    assert ML_DSA_65.verify(pk, b"same", second, ctx=b"c")
