"""Rejections: malformed keys, bad signatures, wrong contexts, expanded or encrypted private keys."""

from __future__ import annotations

import os
import time

import pytest
from dilithium_py.ml_dsa import ML_DSA_65
from kyber_py.ml_kem import ML_KEM_768

from spire_pqc._internal.der import OCTET_STRING, integer, sequence, tlv
from spire_pqc.crypto._fips203 import check_encapsulation_key
from spire_pqc.crypto.keys import OID_ML_DSA_65, NoEncryption, PasswordEncryption, pem_encode
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidContextError, InvalidKeyError, InvalidSignatureError
from tests.unit.crypto._pkcs8 import encrypted_pem, unknown_algorithm_pkcs8

ALG_ML_DSA_65 = bytes.fromhex("300b0609608648016503040312")
ALG_ML_KEM_768 = bytes.fromhex("300b0609608648016503040402")


# Every test runs on both PQ backends (tests/_backends.py); the keys are made on the test's backend.
pytestmark = pytest.mark.usefixtures("pq_backend")


@pytest.fixture
def dsa_key(pq_backend: str) -> MLDSA65PrivateKey:
    return MLDSA65PrivateKey.generate()


@pytest.fixture
def kem_key(pq_backend: str) -> MLKEM768PrivateKey:
    return MLKEM768PrivateKey.generate()


# --- ML-KEM keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 32, 1183, 1185, 2400])
def test_mlkem_public_key_wrong_length(length: int) -> None:
    with pytest.raises(InvalidKeyError, match="1184 bytes"):
        MLKEM768PublicKey(os.urandom(length))


@pytest.mark.parametrize("coefficient", [0, 1, 255])
def test_mlkem_public_key_fails_modulus_check(kem_key: MLKEM768PrivateKey, coefficient: int) -> None:
    """A 12-bit coefficient >= q = 3329 is not a valid encoding (FIPS 203 §7.2)."""
    raw = bytearray(kem_key.public_key().raw())
    # Coefficient 2i sits in bytes 3i, 3i+1 (low nibble); 0xFFF = 4095 >= 3329.
    raw[3 * coefficient] = 0xFF
    raw[3 * coefficient + 1] |= 0x0F
    with pytest.raises(InvalidKeyError, match="modulus"):
        MLKEM768PublicKey(bytes(raw))
    with pytest.raises(InvalidKeyError, match="modulus"):
        check_encapsulation_key(bytes(raw))
    # The same key inside a well-formed SPKI is refused too.
    spki = kem_key.public_key().spki()
    with pytest.raises(InvalidKeyError, match="modulus"):
        MLKEM768PublicKey.from_spki(spki[: -len(raw)] + bytes(raw))


def test_mlkem_exact_modulus_boundary(kem_key: MLKEM768PrivateKey) -> None:
    raw = bytearray(kem_key.public_key().raw())
    # Second coefficient of the first triple = (b1 >> 4) | (b2 << 4): set it to 3328 (ok), then 3329.
    for value, valid in ((3328, True), (3329, False)):
        raw[1] = (raw[1] & 0x0F) | ((value & 0x0F) << 4)
        raw[2] = value >> 4
        if valid:
            MLKEM768PublicKey(bytes(raw))
        else:
            with pytest.raises(InvalidKeyError):
                MLKEM768PublicKey(bytes(raw))


def test_mlkem_private_key_and_ciphertext_lengths(kem_key: MLKEM768PrivateKey) -> None:
    with pytest.raises(InvalidKeyError, match="64 bytes"):
        MLKEM768PrivateKey(bytes(32))
    with pytest.raises(InvalidKeyError, match="1088 bytes"):
        kem_key.decapsulate(bytes(1087))


# --- ML-DSA keys and signatures ----------------------------------------------------------------------


def test_mldsa_key_lengths() -> None:
    with pytest.raises(InvalidKeyError, match="1952 bytes"):
        MLDSA65PublicKey(bytes(1951))
    with pytest.raises(InvalidKeyError, match="32 bytes"):
        MLDSA65PrivateKey(bytes(64))


def test_wrong_context_fails(dsa_key: MLDSA65PrivateKey) -> None:
    signature = dsa_key.sign(b"message", context=b"spire-pqc/issue/v1")
    dsa_key.public_key().verify(signature, b"message", context=b"spire-pqc/issue/v1")
    for context in (b"", b"spire-pqc/issue/v2", b"spire-pqc/svid-binding/v1"):
        with pytest.raises(InvalidSignatureError):
            dsa_key.public_key().verify(signature, b"message", context=context)


@pytest.mark.parametrize("position", [0, 1, 32, 1000, 3308])
def test_tampered_signature_fails(dsa_key: MLDSA65PrivateKey, position: int) -> None:
    signature = bytearray(dsa_key.sign(b"message", context=b"ctx"))
    signature[position] ^= 0x01
    with pytest.raises(InvalidSignatureError):
        dsa_key.public_key().verify(bytes(signature), b"message", context=b"ctx")


def test_tampered_message_truncated_signature_and_other_key(dsa_key: MLDSA65PrivateKey) -> None:
    signature = dsa_key.sign(b"message", context=b"ctx")
    with pytest.raises(InvalidSignatureError):
        dsa_key.public_key().verify(signature, b"messagf", context=b"ctx")
    with pytest.raises(InvalidSignatureError, match="3309 bytes"):
        dsa_key.public_key().verify(signature[:-1], b"message", context=b"ctx")
    with pytest.raises(InvalidSignatureError):
        MLDSA65PrivateKey.generate().public_key().verify(signature, b"message", context=b"ctx")


def test_context_longer_than_255_bytes(dsa_key: MLDSA65PrivateKey) -> None:
    signature = dsa_key.sign(b"m", context=bytes(255))
    dsa_key.public_key().verify(signature, b"m", context=bytes(255))
    # FIPS 204 algorithms 2 and 3: a context longer than 255 bytes is an error for sign and a
    # failure for verify; both are spire-pqc's own typed error, never a plain ValueError.
    for context in (bytes(256), bytes(70_000)):
        with pytest.raises(InvalidContextError, match="at most 255 bytes, got"):
            dsa_key.sign(b"m", context=context)
        with pytest.raises(InvalidContextError, match="at most 255 bytes, got"):
            dsa_key.public_key().verify(signature, b"m", context=context)
    with pytest.raises(TypeError):
        dsa_key.sign(b"m", context="text")  # type: ignore[arg-type]


# --- private key encodings -----------------------------------------------------------------------------


def _pkcs8(algorithm: bytes, private_key: bytes) -> bytes:
    return sequence(integer(0), algorithm, tlv(OCTET_STRING, private_key))


def test_expanded_and_both_form_pkcs8_rejected_with_seed_only_message() -> None:
    seed = os.urandom(32)
    _, sk = ML_DSA_65.key_derive(seed)  # 4032-byte expanded key from an independent implementation
    expanded = _pkcs8(ALG_ML_DSA_65, tlv(OCTET_STRING, sk))
    both = _pkcs8(ALG_ML_DSA_65, sequence(tlv(OCTET_STRING, seed), tlv(OCTET_STRING, sk)))
    with pytest.raises(InvalidKeyError, match="expanded form; only the seed form is accepted"):
        MLDSA65PrivateKey.from_pkcs8(expanded)
    with pytest.raises(InvalidKeyError, match=r"'both'.*only the seed form is accepted"):
        MLDSA65PrivateKey.from_pkcs8(both)
    with pytest.raises(InvalidKeyError, match="only the seed form is accepted"):
        MLDSA65PrivateKey.from_pem(pem_encode("PRIVATE KEY", expanded))
    # The seed form of the same key loads and gives the same public key.
    seed_form = _pkcs8(ALG_ML_DSA_65, b"\x80\x20" + seed)
    assert MLDSA65PrivateKey.from_pkcs8(seed_form).public_key().raw() == ML_DSA_65.key_derive(seed)[0]

    kem_seed = os.urandom(64)
    _, dk = ML_KEM_768.key_derive(kem_seed)
    with pytest.raises(InvalidKeyError, match="only the seed form is accepted"):
        MLKEM768PrivateKey.from_pkcs8(_pkcs8(ALG_ML_KEM_768, tlv(OCTET_STRING, dk)))


def test_pkcs8_of_the_other_algorithm_is_refused(kem_key: MLKEM768PrivateKey) -> None:
    with pytest.raises(InvalidKeyError, match="algorithm is not ML-DSA-65"):
        MLDSA65PrivateKey.from_pkcs8(kem_key.pkcs8())
    with pytest.raises(InvalidKeyError, match="not an ML-DSA-65 SubjectPublicKeyInfo"):
        MLDSA65PublicKey.from_spki(kem_key.public_key().spki())
    assert OID_ML_DSA_65 == "2.16.840.1.101.3.4.3.18"


def test_pkcs8_with_a_long_algorithm_identifier() -> None:
    """Regression: explaining the rejection of a >255-byte AlgorithmIdentifier raised ValueError."""
    der = _pkcs8(sequence(tlv(0x06, bytes(300))), b"\x80\x20" + bytes(32))
    with pytest.raises(InvalidKeyError, match="algorithm is not ML-DSA-65"):
        MLDSA65PrivateKey.from_pkcs8(der)


def test_encrypted_pem(dsa_key: MLDSA65PrivateKey) -> None:
    pem = dsa_key.pem(PasswordEncryption(b"correct horse"))
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert dsa_key.seed() not in pem
    assert MLDSA65PrivateKey.from_pem(pem, password=b"correct horse").seed() == dsa_key.seed()
    with pytest.raises(InvalidKeyError, match="wrong password"):
        MLDSA65PrivateKey.from_pem(pem, password=b"wrong")
    with pytest.raises(InvalidKeyError, match="password is required"):
        MLDSA65PrivateKey.from_pem(pem)
    with pytest.raises(InvalidKeyError, match="not encrypted"):
        MLDSA65PrivateKey.from_pem(dsa_key.pem(NoEncryption()), password=b"x")


@pytest.mark.parametrize("key_class", [MLDSA65PrivateKey, MLKEM768PrivateKey])
def test_encrypted_pem_of_an_unknown_key_algorithm(key_class: type[MLDSA65PrivateKey]) -> None:
    """Regression: cryptography's UnsupportedAlgorithm escaped the key loaders (issue 9)."""
    pem = encrypted_pem(unknown_algorithm_pkcs8(), b"pw")
    with pytest.raises(InvalidKeyError, match="cannot use the encrypted private key") as caught:
        key_class.from_pem(pem, password=b"pw")
    assert "1.3.6.1.4.1.99999.1" in str(caught.value)
    # The same wrapping around a real key loads: the refusal is about the inner algorithm.
    inner = key_class.generate()
    assert key_class.from_pem(encrypted_pem(inner.pkcs8(), b"pw"), password=b"pw").seed() == inner.seed()


def test_encrypted_pem_is_decrypted_from_its_own_block_only(dsa_key: MLDSA65PrivateKey) -> None:
    """Text and other PEM blocks around the encrypted key do not reach the decryption."""
    pem = dsa_key.pem(PasswordEncryption(b"pw"))
    noise = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"
    assert MLDSA65PrivateKey.from_pem(noise + b"comment\n" + pem, password=b"pw").seed() == dsa_key.seed()


def test_encryption_choice_is_explicit() -> None:
    with pytest.raises(ValueError, match="NoEncryption"):
        PasswordEncryption(b"")
    assert "secret" not in repr(PasswordEncryption(b"secret"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
    ],
    ids=["empty", "bad-base64", "truncated-der", "wrong-label"],
)
def test_corrupt_private_key_pem(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        MLDSA65PrivateKey.from_pem(data)
    with pytest.raises(InvalidKeyError):
        MLKEM768PrivateKey.from_pem(data)


def test_corrupt_key_file_bytes(dsa_key: MLDSA65PrivateKey) -> None:
    """Flipping or truncating a key file's content is an InvalidKeyError, never something else."""
    pem = dsa_key.pem(NoEncryption())
    for broken in (pem[: len(pem) // 2], pem.replace(b"M", b"N", 1), pem + pem):
        with pytest.raises(InvalidKeyError):
            MLDSA65PrivateKey.from_pem(broken)


@pytest.mark.parametrize(
    "unit",
    [
        b"-----BEGIN PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA",
        b"-----BEGIN A-----\nAA-----END B-----",
    ],
    ids=["begin-lines", "begin-and-base64", "mismatched-end"],
)
def test_key_pem_parsing_time_is_linear_in_hostile_input(unit: bytes) -> None:
    """A key file is read up to 1 MiB; hostile PEM of that size is refused in milliseconds."""
    data = unit * ((1 << 20) // len(unit))
    started = time.process_time()
    with pytest.raises(InvalidKeyError):
        MLDSA65PrivateKey.from_pem(data)
    assert time.process_time() - started < 5
