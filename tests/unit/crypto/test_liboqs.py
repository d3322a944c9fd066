"""The liboqs backend against the real library built by ``make liboqs``: seed-form keys through the
swapped random source, its exclusion and accounting, the C-boundary checks, and agreement with the
openssl backend for any input (hypothesis).

The two backend objects are used side by side here (``backend_instance``); key classes on the
liboqs backend are covered by every ``pq_backend``-parametrised test in this directory and in
tests/vectors/.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spire_pqc.crypto import _liboqs
from spire_pqc.crypto._backend import Backend
from spire_pqc.crypto._liboqs import LiboqsBackend
from spire_pqc.errors import BackendUnavailableError, CryptoError, InvalidKeyError
from tests._backends import backend_instance
from tests.vectors import _acvp

pytestmark = pytest.mark.liboqs

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


@pytest.fixture(scope="module")
def liboqs() -> LiboqsBackend:
    backend = backend_instance("liboqs")
    assert isinstance(backend, LiboqsBackend)
    return backend


@pytest.fixture(scope="module")
def openssl() -> Backend:
    return backend_instance("openssl")


def _system_random(backend: LiboqsBackend, length: int = 32) -> bytes:
    buffer = ctypes.create_string_buffer(length)
    backend.native.OQS_randombytes(buffer, length)
    return buffer.raw


# --- the known answers the backend checks at load time ---------------------------------------------


def test_load_time_known_answers_are_the_first_acvp_keygen_cases() -> None:
    dsa = next(_acvp.cases(_acvp.MLDSA_KEYGEN))
    kem = next(_acvp.cases(_acvp.MLKEM_KEYGEN))
    assert (dsa.group["tgId"], dsa.tc_id, kem.group["tgId"], kem.tc_id) == (2, 26, 2, 26)
    assert dsa.hex("seed") == _liboqs._KAT_DSA_SEED
    assert hashlib.sha256(dsa.hex("pk")).hexdigest() == _liboqs._KAT_DSA_PK_SHA256
    assert kem.hex("d") + kem.hex("z") == _liboqs._KAT_KEM_SEED
    assert hashlib.sha256(kem.hex("ek")).hexdigest() == _liboqs._KAT_KEM_EK_SHA256


def test_self_test_fails_closed_on_a_wrong_known_answer(
    liboqs: LiboqsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_liboqs, "_KAT_DSA_PK_SHA256", "00" * 32)
    with pytest.raises(BackendUnavailableError, match=r"self-test: ML-DSA-65 key from a seed differs"):
        liboqs._self_test()


# --- seed-form keys and the random source -----------------------------------------------------------


@SETTINGS
@given(seed=st.binary(min_size=32, max_size=32))
def test_mldsa_keys_from_any_seed_match_openssl(liboqs: LiboqsBackend, openssl: Backend, seed: bytes) -> None:
    assert liboqs.mldsa65_from_seed(seed)[0] == openssl.mldsa65_from_seed(seed)[0]


@SETTINGS
@given(seed=st.binary(min_size=64, max_size=64))
def test_mlkem_keys_from_any_seed_match_openssl(liboqs: LiboqsBackend, openssl: Backend, seed: bytes) -> None:
    assert liboqs.mlkem768_from_seed(seed)[0] == openssl.mlkem768_from_seed(seed)[0]


def test_system_source_is_restored_after_seeded_key_generation(liboqs: LiboqsBackend) -> None:
    seed = os.urandom(32)
    public, signer = liboqs.mldsa65_from_seed(seed)
    draws = {_system_random(liboqs) for _ in range(4)}
    assert len(draws) == 4 and seed not in draws and bytes(32) not in draws
    # Hedged signing after key generation: same input, different signatures, both valid.
    first, second = signer.sign(b"m", b"ctx"), signer.sign(b"m", b"ctx")
    assert first != second
    assert liboqs.mldsa65_verify(public, first, b"m", b"ctx") and liboqs.mldsa65_verify(
        public, second, b"m", b"ctx"
    )


class _DrawsDifferently:
    """liboqs's handle, except that ML-DSA key generation draws randomness in another pattern."""

    def __init__(self, real: Any, draws: list[int]) -> None:
        self._real, self._draws = real, draws

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def OQS_SIG_ml_dsa_65_keypair(self, public: Any, secret: Any) -> int:
        for length in self._draws:
            self._real.OQS_randombytes(ctypes.create_string_buffer(length), length)
        ctypes.memset(secret, 0xA5, _liboqs._DSA_SECRET)  # a "key" that must be cleansed
        return 0


@pytest.mark.parametrize("draws", [[], [64], [32, 32], [16, 16]], ids=["none", "one-64", "two-32", "two-16"])
def test_unexpected_random_draws_fail_closed(
    liboqs: LiboqsBackend, monkeypatch: pytest.MonkeyPatch, draws: list[int]
) -> None:
    monkeypatch.setattr(liboqs, "native", _DrawsDifferently(liboqs.native, draws))
    public = ctypes.create_string_buffer(_liboqs._DSA_PUBLIC)
    secret = ctypes.create_string_buffer(_liboqs._DSA_SECRET)
    expected = re.escape(f"random draws {draws}, expected one draw of 32 bytes")
    with pytest.raises(CryptoError, match=expected):
        liboqs._derandomised_keypair(os.urandom(32), public, secret)
    assert secret.raw == bytes(_liboqs._DSA_SECRET)  # cleansed
    monkeypatch.undo()
    assert _system_random(liboqs) != _system_random(liboqs)  # the OS source is back


def test_concurrent_signing_never_sees_a_seed(liboqs: LiboqsBackend, openssl: Backend) -> None:
    """Signing threads run flat out while other threads derive keys from seeds: every derived key is
    the FIPS 204 one (a signature that consumed the seed would leave key generation without its draw,
    which raises), and every signature verifies."""
    public, signer = liboqs.mldsa65_from_seed(os.urandom(32))
    stop = threading.Event()
    failures: list[str] = []
    signed = [0]

    def sign_loop(index: int) -> None:
        while not stop.is_set():
            message = b"%d/%d" % (index, signed[0])
            if not liboqs.mldsa65_verify(public, signer.sign(message, b"c"), message, b"c"):
                failures.append(f"signature over {message!r} does not verify")
            signed[0] += 1

    def keygen_loop(rounds: int) -> None:
        for _ in range(rounds):
            seed = os.urandom(32)
            try:
                derived = liboqs.mldsa65_from_seed(seed)[0]
            except CryptoError as exc:
                failures.append(str(exc))
                continue
            if derived != openssl.mldsa65_from_seed(seed)[0]:
                failures.append(f"seed {seed.hex()} gave another key")

    signers = [threading.Thread(target=sign_loop, args=(i,)) for i in range(2)]
    generators = [threading.Thread(target=keygen_loop, args=(150,)) for _ in range(2)]
    for thread in signers + generators:
        thread.start()
    for thread in generators:
        thread.join(timeout=120)
    stop.set()
    for thread in signers:
        thread.join(timeout=120)
    assert failures == []
    assert signed[0] > 0


# --- the C boundary ---------------------------------------------------------------------------------


def test_lengths_are_checked_before_liboqs_reads_a_pointer(liboqs: LiboqsBackend) -> None:
    public, signer = liboqs.mldsa65_from_seed(os.urandom(32))
    signature = signer.sign(b"m", b"")
    with pytest.raises(InvalidKeyError, match="1952 bytes"):
        liboqs.mldsa65_verify(public[:-1], signature, b"m", b"")
    with pytest.raises(InvalidKeyError, match="1184 bytes"):
        liboqs.mlkem768_encapsulate(bytes(1183))
    _, decapsulator = liboqs.mlkem768_from_seed(os.urandom(64))
    for length in (0, 1087, 1089):
        with pytest.raises(InvalidKeyError, match="1088 bytes"):
            decapsulator.decapsulate(bytes(length))
    with pytest.raises(InvalidKeyError, match="seed must be 32 bytes"):
        liboqs.mldsa65_from_seed(bytes(31))
    with pytest.raises(InvalidKeyError, match="seed must be 64 bytes"):
        liboqs.mlkem768_from_seed(bytes(63))
    # Wrong-length signatures and over-long contexts are liboqs's own refusals, typed.
    assert not liboqs.mldsa65_verify(public, signature[:-1], b"m", b"")
    assert not liboqs.mldsa65_verify(public, signature, b"m", bytes(256))
    with pytest.raises(CryptoError, match="signing failed"):
        signer.sign(b"m", bytes(256))


def test_modulus_check_is_liboqs_own(liboqs: LiboqsBackend) -> None:
    """An encapsulation key with a coefficient >= q is refused by liboqs itself (FIPS 203 §7.2)."""
    ek = bytearray(liboqs.mlkem768_from_seed(os.urandom(64))[0])
    ek[0], ek[1] = 0xFF, ek[1] | 0x0F  # first coefficient = 4095
    with pytest.raises(InvalidKeyError, match="modulus check"):
        liboqs.mlkem768_encapsulate(bytes(ek))


def test_secret_keys_are_cleansed_when_collected(liboqs: LiboqsBackend) -> None:
    def buffers() -> Iterator[Any]:
        _, signer = liboqs.mldsa65_from_seed(os.urandom(32))
        _, decapsulator = liboqs.mlkem768_from_seed(os.urandom(64))
        yield signer._secret.buffer
        yield decapsulator._secret.buffer

    held = list(buffers())  # the key objects are gone; only their buffers are still referenced here
    gc.collect()
    assert [buffer.raw == bytes(len(buffer)) for buffer in held] == [True, True]


# --- agreement with the openssl backend for any input ---------------------------------------------


@SETTINGS
@given(
    message=st.binary(max_size=2048),
    context=st.binary(max_size=255),
    seed=st.binary(min_size=32, max_size=32),
)
def test_signatures_cross_both_ways(
    liboqs: LiboqsBackend, openssl: Backend, message: bytes, context: bytes, seed: bytes
) -> None:
    public, liboqs_signer = liboqs.mldsa65_from_seed(seed)
    _, openssl_signer = openssl.mldsa65_from_seed(seed)
    assert openssl.mldsa65_verify(public, liboqs_signer.sign(message, context), message, context)
    assert liboqs.mldsa65_verify(public, openssl_signer.sign(message, context), message, context)


@SETTINGS
@given(
    public=st.binary(min_size=1952, max_size=1952),
    signature=st.binary(min_size=3309, max_size=3309),
    message=st.binary(max_size=256),
)
def test_arbitrary_signatures_are_rejected_alike(
    liboqs: LiboqsBackend, openssl: Backend, public: bytes, signature: bytes, message: bytes
) -> None:
    assert liboqs.mldsa65_verify(public, signature, message, b"") is False
    assert openssl.mldsa65_verify(public, signature, message, b"") is False


@SETTINGS
@given(seed=st.binary(min_size=64, max_size=64), ciphertext=st.binary(min_size=1088, max_size=1088))
def test_any_ciphertext_decapsulates_alike(
    liboqs: LiboqsBackend, openssl: Backend, seed: bytes, ciphertext: bytes
) -> None:
    """Implicit rejection (FIPS 203): both give the same pseudo-random secret for a garbage ciphertext."""
    ek, liboqs_key = liboqs.mlkem768_from_seed(seed)
    _, openssl_key = openssl.mlkem768_from_seed(seed)
    assert liboqs_key.decapsulate(ciphertext) == openssl_key.decapsulate(ciphertext)
    shared, real = liboqs.mlkem768_encapsulate(ek)
    assert openssl_key.decapsulate(real) == shared
    shared, real = openssl.mlkem768_encapsulate(ek)
    assert liboqs_key.decapsulate(real) == shared
