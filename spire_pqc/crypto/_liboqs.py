"""The ``liboqs`` backend: ML-DSA-65 and ML-KEM-768 through liboqs's C library (tested with 0.16.0).

liboqs-python finds and loads the library (``OQS_INSTALL_PATH``, ``~/_oqs`` or the system library
path) and runs ``OQS_init``; this module binds the public C functions it needs on its own handle to
that same library, with exact prototypes, because liboqs-python wraps neither derandomised encapsulation nor the
random-source hooks, and its objects allocate a fresh ``OQS_SIG`` per call.

**Seed-form ML-DSA-65 keys.** liboqs has no seeded ML-DSA key generation in its public API (no
``OQS_SIG_keypair_from_seed`` in any release). ``OQS_SIG_ml_dsa_65_keypair`` is FIPS 204
ML-DSA.KeyGen: it draws the 32-byte seed xi from ``OQS_randombytes`` exactly once and then runs
KeyGen_internal(xi) (mldsa-native ``sign.c``, checked on 0.16.0; the pairwise-consistency test that
would draw again is off in liboqs's build). So a key is derived from *our* seed by installing, for the
duration of that one call, a random source that hands out the seed
(``OQS_randombytes_custom_algorithm``), then restoring the OS source
(``OQS_randombytes_switch_algorithm("system")``). The random source is global to the process, so:

* the swap happens under the *exclusive* side of :data:`_RANDOMNESS`, and every other liboqs call
  that draws randomness (hedged signing) holds its *shared* side - signatures never see the seed,
  and signing threads still run in parallel with each other;
* encapsulation uses ``OQS_KEM_ml_kem_768_encaps_derand`` with ``m`` from ``os.urandom``, and ML-KEM
  keys come from ``keypair_derand``: neither draws liboqs randomness at all;
* every draw during the swap is counted: anything but one draw of exactly 32 bytes discards the key
  and raises (a liboqs whose key generation draws differently fails closed, never silently);
* at load, known-answer tests (the first NIST ACVP keyGen case of each algorithm) check that this
  route gives the FIPS 204 / FIPS 203 keys on this build, and that signing is hedged afterwards.

liboqs-python is imported only after a loadable library was found in the places it searches, with
that library already loaded: when it finds none it downloads and builds liboqs, which must never
happen. Its import-time handler that logs to *stdout* is removed (the plugin's stdout is the
go-plugin handshake channel); its records propagate to whatever logging the entry point set up.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from spire_pqc.errors import BackendUnavailableError, CryptoError, InvalidKeyError

TESTED_VERSION = "0.16.0"

_DSA_PUBLIC, _DSA_SECRET, _DSA_SIGNATURE, _DSA_SEED = 1952, 4032, 3309, 32
_KEM_PUBLIC, _KEM_SECRET, _KEM_CIPHERTEXT, _KEM_SEED, _KEM_ENCAPS_SEED, _SHARED = 1184, 2400, 1088, 64, 32, 32
_OQS_SUCCESS = 0

# Known answers: NIST ACVP ML-DSA-keyGen-FIPS204 (ML-DSA-65) and ML-KEM-keyGen-FIPS203 (ML-KEM-768),
# tgId 2 tcId 26 - the first case of each file in tests/vectors/acvp/ (test_backends checks them).
_KAT_DSA_SEED = bytes.fromhex("A991FD42B071D49C48AE3E75C647459E0DAAD1E1BA356A04801912D3294BCFF8")
_KAT_DSA_PK_SHA256 = "b1a7d0d2f0d7a04b9d5ffccd9bd578864dab4a01cdd7f70a05cd1f4f0672e43a"
_KAT_KEM_SEED = bytes.fromhex(
    "E582B7D75E6C80B05AE392A1FC9F7153B12390FD99930368CC67A768BAEBC8A0"  # d
    "1CDACB8740C0B87C4A379575F187B367CBFA3B300BF591B109F79816E9CBE8F0"  # z
)
_KAT_KEM_EK_SHA256 = "4158f6afb5e516c99f1da07da8c651348422b17c1f4e9a08ad73fb1f91249b3e"

_u8p = ctypes.c_char_p  # const uint8_t * (bytes in) and uint8_t * (string buffers out)
_size = ctypes.c_size_t
_RandomSource = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)

# name: (restype, argtypes) - the prototypes of liboqs 0.16's public headers (oqs/common.h, rand.h,
# sig_ml_dsa.h, kem_ml_kem.h). OQS_STATUS is a C enum (int).
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "OQS_version": (ctypes.c_char_p, []),
    "OQS_MEM_cleanse": (None, [ctypes.c_void_p, _size]),
    "OQS_randombytes": (None, [_u8p, _size]),
    "OQS_randombytes_custom_algorithm": (None, [_RandomSource]),
    "OQS_randombytes_switch_algorithm": (ctypes.c_int, [ctypes.c_char_p]),
    "OQS_SIG_ml_dsa_65_keypair": (ctypes.c_int, [_u8p, _u8p]),
    "OQS_SIG_ml_dsa_65_sign_with_ctx_str": (
        ctypes.c_int,
        [_u8p, ctypes.POINTER(_size), _u8p, _size, _u8p, _size, _u8p],
    ),
    "OQS_SIG_ml_dsa_65_verify_with_ctx_str": (ctypes.c_int, [_u8p, _size, _u8p, _size, _u8p, _size, _u8p]),
    "OQS_KEM_ml_kem_768_keypair_derand": (ctypes.c_int, [_u8p, _u8p, _u8p]),
    "OQS_KEM_ml_kem_768_encaps_derand": (ctypes.c_int, [_u8p, _u8p, _u8p, _u8p]),
    "OQS_KEM_ml_kem_768_decaps": (ctypes.c_int, [_u8p, _u8p, _u8p]),
}


# --- locating the library ----------------------------------------------------------------------


def _candidates() -> list[str]:
    """Where liboqs-python 0.16 looks, in its order: the system library path, then the install path."""
    found = [ctypes.util.find_library(name) for name in ("liboqs", "oqs")]
    root = Path(os.environ.get("OQS_INSTALL_PATH") or Path.home() / "_oqs").absolute()
    return [f for f in found if f] + [str(root / "lib" / "liboqs.so"), str(root / "lib64" / "liboqs.so")]


def find_liboqs() -> str | None:
    """The liboqs shared library liboqs-python would load, or None. Never imports liboqs-python."""
    for candidate in _candidates():
        # os.path.exists: a path this user may not look into (another user's OQS_INSTALL_PATH) is "not
        # there", where Path.exists() raises PermissionError.
        if "/" in candidate and not os.path.exists(candidate):
            continue
        try:
            ctypes.CDLL(candidate)
        except OSError:
            continue
        return candidate
    return None


@functools.cache
def library_version(path: str) -> str:
    """``OQS_version()`` of the library at ``path`` (loaded, not initialised)."""
    lib = ctypes.CDLL(path)
    lib.OQS_version.restype = ctypes.c_char_p
    version: bytes = lib.OQS_version()
    return version.decode()


def _import_liboqs_python() -> ModuleType:
    """``import oqs`` without its stdout logging; SystemExit from its installer becomes our error."""
    oqs_logger = logging.getLogger("oqs.oqs")
    before = list(oqs_logger.handlers)
    mute = logging.Filter("\0")  # matches no logger name: drops the import-time record
    oqs_logger.addFilter(mute)
    try:
        import oqs
    except (Exception, SystemExit) as exc:
        raise BackendUnavailableError(f"liboqs-python failed to load liboqs: {exc!r}") from exc
    finally:
        oqs_logger.removeFilter(mute)
        for handler in oqs_logger.handlers[:]:
            if handler not in before:
                oqs_logger.removeHandler(handler)
        oqs_logger.setLevel(logging.NOTSET)
    module: ModuleType = oqs
    return module


def _same_function(a: Any, b: Any) -> bool:
    return bool(ctypes.cast(a, ctypes.c_void_p).value == ctypes.cast(b, ctypes.c_void_p).value)


def _load_native() -> tuple[ctypes.CDLL, str, ModuleType]:
    path = find_liboqs()
    if path is None:
        raise BackendUnavailableError(
            "liboqs backend requested but liboqs's shared library was not found (looked in "
            f"{', '.join(_candidates())}); build it with `make liboqs` and set OQS_INSTALL_PATH to "
            "$SPIRE_PQC_CACHE/liboqs-0.16.0"
        )
    # Loaded before liboqs-python looks: its own dlopen of the same path or soname then returns this
    # already-mapped library, so it cannot fall through to its download-and-build path.
    ours = ctypes.CDLL(path)
    oqs = _import_liboqs_python()
    native: ctypes.CDLL = oqs.native()
    if not _same_function(native.OQS_version, ours.OQS_version):
        raise BackendUnavailableError(
            f"liboqs-python loaded {getattr(native, '_name', '?')}, not {path}: two liboqs builds are "
            "installed; point OQS_INSTALL_PATH at one and remove the other from the library path"
        )
    # Prototypes go on our own handle to the same library, leaving liboqs-python's function objects
    # (and the calls it makes through them) untouched.
    missing = []
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            function = getattr(ours, name)
        except AttributeError:
            missing.append(name)
            continue
        function.restype, function.argtypes = restype, argtypes
    if missing:
        raise BackendUnavailableError(
            f"liboqs at {path} lacks {', '.join(missing)} (needs ML-DSA-65 and ML-KEM-768, liboqs >= {TESTED_VERSION})"
        )
    return ours, path, oqs


# --- the random source -------------------------------------------------------------------------


class _SharedExclusiveLock:
    """Many holders of the shared side, or one of the exclusive side; a waiting exclusive holder
    blocks new shared ones (key generation is rare and must not starve behind a signing stream)."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            while self._exclusive or self._exclusive_waiting:
                self._condition.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                if self._shared == 0:
                    self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._condition.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


# Exclusive: liboqs's random source is swapped. Shared: a liboqs call that draws randomness runs.
_RANDOMNESS = _SharedExclusiveLock()


class _SeedSource:
    """A random source for ``OQS_randombytes_custom_algorithm`` that returns one seed, once.

    Used only under ``_RANDOMNESS.exclusive()``. The callback must never raise (ctypes would print
    and return an unfilled buffer), so an unexpected draw is zero-filled and recorded, and the
    caller discards the key.
    """

    def __init__(self) -> None:
        self.seed = b""
        self.draws: list[int] = []
        self.callback = _RandomSource(self._fill)  # kept referenced: liboqs holds the raw pointer

    def _fill(self, out: Any, length: int) -> None:
        self.draws.append(length)
        if len(self.draws) == 1 and length == len(self.seed):
            ctypes.memmove(out, self.seed, length)
        else:
            ctypes.memset(out, 0, length)


# --- the backend -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SecretKey:
    """A liboqs expanded secret key in a C buffer, cleansed when its owner is collected."""

    buffer: Any

    @classmethod
    def empty(cls, size: int, native: ctypes.CDLL, owner: object) -> _SecretKey:
        buffer = ctypes.create_string_buffer(size)
        weakref.finalize(owner, native.OQS_MEM_cleanse, buffer, size)
        return cls(buffer)


class _LiboqsSigner:
    __slots__ = ("__weakref__", "_backend", "_secret")

    def __init__(self, backend: LiboqsBackend) -> None:
        self._backend = backend
        self._secret = _SecretKey.empty(_DSA_SECRET, backend.native, self)

    def sign(self, message: bytes, context: bytes) -> bytes:
        return self._backend._sign(self._secret.buffer, message, context)


class _LiboqsDecapsulator:
    __slots__ = ("__weakref__", "_backend", "_secret")

    def __init__(self, backend: LiboqsBackend) -> None:
        self._backend = backend
        self._secret = _SecretKey.empty(_KEM_SECRET, backend.native, self)

    def decapsulate(self, ciphertext: bytes) -> bytes:
        return self._backend._decapsulate(self._secret.buffer, ciphertext)


class LiboqsBackend:
    """The primitive surface of :class:`spire_pqc.crypto._backend.Backend` on liboqs."""

    name = "liboqs"

    def __init__(self) -> None:
        self.native, self.path, oqs = _load_native()
        self.version = library_version(self.path)
        self.python_binding_version = str(oqs.oqs_python_version() or "unknown")
        self._seed_source = _SeedSource()
        self._broken: str | None = None
        self._self_test()

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise BackendUnavailableError(f"liboqs backend disabled: {self._broken}")

    # ML-DSA-65

    def mldsa65_from_seed(self, seed: bytes) -> tuple[bytes, _LiboqsSigner]:
        if len(seed) != _DSA_SEED:
            raise InvalidKeyError(f"ML-DSA-65 seed must be {_DSA_SEED} bytes, got {len(seed)}")
        signer = _LiboqsSigner(self)
        public = ctypes.create_string_buffer(_DSA_PUBLIC)
        self._derandomised_keypair(seed, public, signer._secret.buffer)
        return public.raw, signer

    def _derandomised_keypair(self, seed: bytes, public: Any, secret: Any) -> None:
        """``OQS_SIG_ml_dsa_65_keypair`` with ``seed`` as its only random draw (see the module docstring)."""
        source = self._seed_source
        with _RANDOMNESS.exclusive():
            self._check_usable()
            source.seed, source.draws = bytes(seed), []
            self.native.OQS_randombytes_custom_algorithm(source.callback)
            try:
                rv = self.native.OQS_SIG_ml_dsa_65_keypair(public, secret)
            finally:
                restored = self.native.OQS_randombytes_switch_algorithm(b"system")
                draws, source.seed, source.draws = source.draws, b"", []
            if restored != _OQS_SUCCESS:
                # The seed source stays installed: no later liboqs draw can be trusted.
                self._broken = f"restoring liboqs's system random source failed (status {restored})"
        self._check_usable()
        if rv != _OQS_SUCCESS or draws != [_DSA_SEED]:
            self.native.OQS_MEM_cleanse(secret, _DSA_SECRET)
            raise CryptoError(
                f"liboqs ML-DSA-65 key generation from a seed failed (status {rv}, random draws {draws}, "
                f"expected one draw of {_DSA_SEED} bytes): this liboqs build cannot derive seed-form keys"
            )

    def _sign(self, secret: Any, message: bytes, context: bytes) -> bytes:
        signature = ctypes.create_string_buffer(_DSA_SIGNATURE)
        length = _size(_DSA_SIGNATURE)
        with _RANDOMNESS.shared():  # hedged signing draws 32 bytes of rnd
            self._check_usable()
            rv = self.native.OQS_SIG_ml_dsa_65_sign_with_ctx_str(
                signature, ctypes.byref(length), message, len(message), context, len(context), secret
            )
        if rv != _OQS_SUCCESS or length.value != _DSA_SIGNATURE:
            raise CryptoError(f"liboqs ML-DSA-65 signing failed (status {rv}, context {len(context)} bytes)")
        return signature.raw

    def mldsa65_verify(self, public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        if len(public_key) != _DSA_PUBLIC:  # liboqs reads exactly 1952 bytes from the pointer
            raise InvalidKeyError(f"ML-DSA-65 public key must be {_DSA_PUBLIC} bytes, got {len(public_key)}")
        rv = self.native.OQS_SIG_ml_dsa_65_verify_with_ctx_str(
            message, len(message), signature, len(signature), context, len(context), public_key
        )
        return bool(rv == _OQS_SUCCESS)

    # ML-KEM-768

    def mlkem768_from_seed(self, seed: bytes) -> tuple[bytes, _LiboqsDecapsulator]:
        if len(seed) != _KEM_SEED:
            raise InvalidKeyError(f"ML-KEM-768 seed must be {_KEM_SEED} bytes, got {len(seed)}")
        decapsulator = _LiboqsDecapsulator(self)
        public = ctypes.create_string_buffer(_KEM_PUBLIC)
        rv = self.native.OQS_KEM_ml_kem_768_keypair_derand(public, decapsulator._secret.buffer, seed)
        if rv != _OQS_SUCCESS:
            raise CryptoError(f"liboqs ML-KEM-768 key generation from a seed failed (status {rv})")
        return public.raw, decapsulator

    def mlkem768_encapsulate(self, encapsulation_key: bytes) -> tuple[bytes, bytes]:
        if len(encapsulation_key) != _KEM_PUBLIC:
            raise InvalidKeyError(
                f"ML-KEM-768 encapsulation key must be {_KEM_PUBLIC} bytes, got {len(encapsulation_key)}"
            )
        ciphertext = ctypes.create_string_buffer(_KEM_CIPHERTEXT)
        shared = ctypes.create_string_buffer(_SHARED)
        # m from the OS (FIPS 203 Encaps draws 32 bytes): no liboqs randomness, so no lock.
        rv = self.native.OQS_KEM_ml_kem_768_encaps_derand(
            ciphertext, shared, encapsulation_key, os.urandom(_KEM_ENCAPS_SEED)
        )
        if rv != _OQS_SUCCESS:
            # mlkem-native runs the FIPS 203 §7.2 modulus check first; it is the only way to fail here.
            raise InvalidKeyError("ML-KEM-768 encapsulation key fails the FIPS 203 modulus check")
        return shared.raw, ciphertext.raw

    def _decapsulate(self, secret: Any, ciphertext: bytes) -> bytes:
        if len(ciphertext) != _KEM_CIPHERTEXT:  # liboqs reads exactly 1088 bytes
            raise InvalidKeyError(
                f"ML-KEM-768 ciphertext must be {_KEM_CIPHERTEXT} bytes, got {len(ciphertext)}"
            )
        shared = ctypes.create_string_buffer(_SHARED)
        rv = self.native.OQS_KEM_ml_kem_768_decaps(shared, ciphertext, secret)
        if rv != _OQS_SUCCESS:
            raise CryptoError(f"liboqs ML-KEM-768 decapsulation failed (status {rv})")
        return shared.raw

    # Load-time checks

    def _self_test(self) -> None:
        """Known answers for both key generations, and hedged signing with the OS source restored."""
        public, signer = self.mldsa65_from_seed(_KAT_DSA_SEED)
        kem_public, _ = self.mlkem768_from_seed(_KAT_KEM_SEED)
        first, second = signer.sign(b"self-test", b"spire-pqc"), signer.sign(b"self-test", b"spire-pqc")
        problems = []
        if hashlib.sha256(public).hexdigest() != _KAT_DSA_PK_SHA256:
            problems.append("ML-DSA-65 key from a seed differs from FIPS 204 (ACVP keyGen tcId 26)")
        if hashlib.sha256(kem_public).hexdigest() != _KAT_KEM_EK_SHA256:
            problems.append("ML-KEM-768 key from a seed differs from FIPS 203 (ACVP keyGen tcId 26)")
        if first == second or not all(
            self.mldsa65_verify(public, s, b"self-test", b"spire-pqc") for s in (first, second)
        ):
            problems.append("ML-DSA-65 signing is not hedged or does not verify after seeded key generation")
        if problems:
            raise BackendUnavailableError(
                f"liboqs {self.version} at {self.path} failed its self-test: " + "; ".join(problems)
            )
