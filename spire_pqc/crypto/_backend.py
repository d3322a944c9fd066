"""Post-quantum backends: the only module that imports a PQ implementation.

Two backends implement the same small primitive surface over *seeds* and *raw keys* (the key
classes in :mod:`spire_pqc.crypto.mldsa` / :mod:`spire_pqc.crypto.mlkem` own encodings):

* ``openssl`` (default): pyca/cryptography >= 50, whose wheel bundles OpenSSL >= 3.5.
* ``liboqs``: liboqs-python over liboqs's C library, used only when asked for and present.

The backend is chosen once per process, from ``SPIRE_PQC_BACKEND`` (``auto`` | ``openssl`` |
``liboqs``) at first use or by :func:`select_backend`. If no PQ backend is usable every PQ
operation raises :class:`BackendUnavailableError`; nothing ever falls back to classical crypto.

X.509 certificate *building* always goes through cryptography (it is the X.509 engine); signature
*verification* of our own messages and of PQC certificates goes through the selected backend.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from spire_pqc.errors import BackendUnavailableError, InvalidKeyError

MLDSA65_SEED_LEN = 32
MLDSA65_PUBLIC_LEN = 1952
MLDSA65_SIGNATURE_LEN = 3309
MLKEM768_SEED_LEN = 64
MLKEM768_PUBLIC_LEN = 1184
MLKEM768_CIPHERTEXT_LEN = 1088
SHARED_SECRET_LEN = 32
MAX_CONTEXT_LEN = 255

ENV_VAR = "SPIRE_PQC_BACKEND"


class MLDSASigner(Protocol):
    """A loaded ML-DSA-65 private key: signs with a FIPS 204 context string."""

    def sign(self, message: bytes, context: bytes) -> bytes: ...


class MLKEMDecapsulator(Protocol):
    """A loaded ML-KEM-768 decapsulation key."""

    def decapsulate(self, ciphertext: bytes) -> bytes: ...


class Backend(Protocol):
    """The primitive operations a PQ backend provides."""

    name: str

    def mldsa65_from_seed(self, seed: bytes) -> tuple[bytes, MLDSASigner]:
        """Return ``(public key, signer)`` for a 32-byte seed xi (FIPS 204 KeyGen_internal)."""
        ...

    def mldsa65_verify(self, public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool: ...

    def mlkem768_from_seed(self, seed: bytes) -> tuple[bytes, MLKEMDecapsulator]:
        """Return ``(encapsulation key, decapsulator)`` for a 64-byte seed d || z."""
        ...

    def mlkem768_encapsulate(self, encapsulation_key: bytes) -> tuple[bytes, bytes]:
        """Return ``(shared secret, ciphertext)``."""
        ...


# --- openssl (pyca/cryptography) ---------------------------------------------------------------


class _OpenSSLBackend:
    name = "openssl"

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

        self._mldsa = mldsa
        self._mlkem = mlkem
        # OpenSSL keeps the expanded matrix in a public-key object, so encapsulating to a peer we
        # talk to repeatedly is ~2x faster with the parsed object reused (reference/pqc-standards §3).
        self._ek_cache: Callable[[bytes], Any] = functools.lru_cache(maxsize=256)(self._load_ek)
        self._pk_cache: Callable[[bytes], Any] = functools.lru_cache(maxsize=256)(self._load_pk)

    def mldsa65_from_seed(self, seed: bytes) -> tuple[bytes, MLDSASigner]:
        key = self._mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        return key.public_key().public_bytes_raw(), _OpenSSLSigner(key)

    def _load_pk(self, public_key: bytes) -> Any:
        return self._mldsa.MLDSA65PublicKey.from_public_bytes(public_key)

    def mldsa65_verify(self, public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            key = self._pk_cache(public_key)
        except ValueError as exc:
            raise InvalidKeyError(f"ML-DSA-65 public key rejected: {exc}") from exc
        try:
            key.verify(signature, message, context or None)
        except InvalidSignature:
            return False
        return True

    def mlkem768_from_seed(self, seed: bytes) -> tuple[bytes, MLKEMDecapsulator]:
        key = self._mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        return key.public_key().public_bytes_raw(), key

    def _load_ek(self, encapsulation_key: bytes) -> Any:
        return self._mlkem.MLKEM768PublicKey.from_public_bytes(encapsulation_key)

    def mlkem768_encapsulate(self, encapsulation_key: bytes) -> tuple[bytes, bytes]:
        try:
            key = self._ek_cache(encapsulation_key)
        except ValueError as exc:
            raise InvalidKeyError(f"ML-KEM-768 encapsulation key rejected: {exc}") from exc
        shared, ciphertext = key.encapsulate()
        return bytes(shared), bytes(ciphertext)

    # cryptography-specific helpers for the X.509 and PKCS#8 layers.

    def cryptography_mldsa65_private_key(self, seed: bytes) -> Any:
        return self._mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)

    def cryptography_mlkem768_public_key(self, encapsulation_key: bytes) -> Any:
        return self._mlkem.MLKEM768PublicKey.from_public_bytes(encapsulation_key)

    def cryptography_mldsa65_public_key(self, public_key: bytes) -> Any:
        return self._mldsa.MLDSA65PublicKey.from_public_bytes(public_key)


@dataclass(frozen=True)
class _OpenSSLSigner:
    key: Any

    def sign(self, message: bytes, context: bytes) -> bytes:
        return bytes(self.key.sign(message, context or None))


# --- liboqs ------------------------------------------------------------------------------------


def find_liboqs() -> str | None:
    """Locate liboqs's shared library *without* importing liboqs-python.

    Importing ``oqs`` when the C library is missing makes liboqs-python try to download and build
    it, so we look first, the same places liboqs-python would, and load it with ctypes.
    """
    candidates: list[str] = []
    install = os.environ.get("OQS_INSTALL_PATH")
    roots = [Path(install)] if install else [Path.home() / "_oqs"]
    for root in roots:
        candidates += [str(root / "lib" / "liboqs.so"), str(root / "lib64" / "liboqs.so")]
    found = ctypes.util.find_library("oqs")
    if found:
        candidates.insert(0, found)
    for candidate in candidates:
        if "/" in candidate and not Path(candidate).exists():
            continue
        try:
            ctypes.CDLL(candidate)
        except OSError:
            continue
        return candidate
    return None


class _LiboqsBackend:
    name = "liboqs"

    def __init__(self) -> None:
        if find_liboqs() is None:
            raise BackendUnavailableError(
                "liboqs backend requested but liboqs's shared library was not found "
                "(looked in OQS_INSTALL_PATH, ~/_oqs/lib and the system library path)"
            )
        import oqs

        self._oqs = oqs
        self._seeded_sig = hasattr(oqs.native(), "OQS_SIG_keypair_from_seed")

    def mldsa65_from_seed(self, seed: bytes) -> tuple[bytes, MLDSASigner]:
        if not self._seeded_sig:
            raise BackendUnavailableError(
                "this liboqs build cannot derive ML-DSA-65 keys from a seed (OQS_SIG_keypair_from_seed); "
                "seed-form keys need liboqs >= 0.15 or the openssl backend"
            )
        sig = self._oqs.Signature("ML-DSA-65")
        native = self._oqs.native()
        public = ctypes.create_string_buffer(MLDSA65_PUBLIC_LEN)
        secret = ctypes.create_string_buffer(sig.length_secret_key)
        rv = native.OQS_SIG_keypair_from_seed(sig._sig, public, secret, ctypes.c_char_p(seed))
        if rv != 0:
            raise InvalidKeyError("liboqs rejected the ML-DSA-65 seed")
        signer = self._oqs.Signature("ML-DSA-65", secret_key=bytes(secret))
        return bytes(public), _LiboqsSigner(signer)

    def mldsa65_verify(self, public_key: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        with self._oqs.Signature("ML-DSA-65") as verifier:
            return bool(verifier.verify_with_ctx_str(message, signature, context, public_key))

    def mlkem768_from_seed(self, seed: bytes) -> tuple[bytes, MLKEMDecapsulator]:
        kem = self._oqs.KeyEncapsulation("ML-KEM-768")
        public = kem.generate_keypair_seed(seed)
        return bytes(public), _LiboqsDecapsulator(kem)

    def mlkem768_encapsulate(self, encapsulation_key: bytes) -> tuple[bytes, bytes]:
        from spire_pqc.crypto._fips203 import check_encapsulation_key

        check_encapsulation_key(encapsulation_key)
        with self._oqs.KeyEncapsulation("ML-KEM-768") as kem:
            ciphertext, shared = kem.encap_secret(encapsulation_key)
        return bytes(shared), bytes(ciphertext)


@dataclass(frozen=True)
class _LiboqsSigner:
    sig: Any
    lock: threading.Lock = threading.Lock()  # noqa: RUF009 - one liboqs context is not re-entrant

    def sign(self, message: bytes, context: bytes) -> bytes:
        with self.lock:
            return bytes(self.sig.sign_with_ctx_str(message, context))


@dataclass(frozen=True)
class _LiboqsDecapsulator:
    kem: Any

    def decapsulate(self, ciphertext: bytes) -> bytes:
        return bytes(self.kem.decap_secret(ciphertext))


# --- selection ---------------------------------------------------------------------------------

_lock = threading.Lock()
_selected: Backend | None = None


def _openssl_usable() -> str | None:
    """Return None when cryptography provides ML-DSA/ML-KEM, else the reason it does not."""
    try:
        from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

        mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes(32))
        mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(64))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; reported below
        return f"cryptography lacks ML-DSA-65/ML-KEM-768 ({type(exc).__name__}: {exc})"
    return None


def _build(name: str) -> Backend:
    if name == "openssl":
        reason = _openssl_usable()
        if reason:
            raise BackendUnavailableError(f"openssl backend unusable: {reason}; need cryptography >= 50")
        return _OpenSSLBackend()
    if name == "liboqs":
        return _LiboqsBackend()
    if name == "auto":
        if _openssl_usable() is None:
            return _OpenSSLBackend()
        if find_liboqs() is not None:
            return _LiboqsBackend()
        raise BackendUnavailableError(
            "no post-quantum backend is usable: cryptography >= 50 (OpenSSL >= 3.5) is missing ML-DSA/ML-KEM "
            "and liboqs is not installed; refusing to continue without post-quantum cryptography"
        )
    raise BackendUnavailableError(f"{ENV_VAR}={name!r}: expected one of auto, openssl, liboqs")


def select_backend(name: str) -> Backend:
    """Choose the backend for this process. Allowed once, or again with the same name."""
    global _selected  # noqa: PLW0603 - one process-wide choice, guarded by _lock
    with _lock:
        if _selected is not None:
            if name not in ("auto", _selected.name):
                raise BackendUnavailableError(
                    f"backend already chosen for this process: {_selected.name}; cannot switch to {name}"
                )
            return _selected
        _selected = _build(name)
        return _selected


def backend() -> Backend:
    """The process's backend, chosen from ``SPIRE_PQC_BACKEND`` (default ``auto``) at first use."""
    current = _selected
    if current is not None:
        return current
    return select_backend(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto")


def openssl_helpers() -> _OpenSSLBackend:
    """cryptography key objects for X.509 building and PKCS#8 encryption (always cryptography)."""
    return _openssl_singleton()


@functools.cache
def _openssl_singleton() -> _OpenSSLBackend:
    reason = _openssl_usable()
    if reason:
        raise BackendUnavailableError(f"X.509 with ML-DSA needs cryptography >= 50: {reason}")
    return _OpenSSLBackend()


def pkcs8_encrypt_pem(plain_der: bytes, password: bytes) -> bytes:
    """Wrap a seed-form PKCS#8 in an encrypted PKCS#8 PEM (PBES2, the best cryptography offers)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_der_private_key(plain_der, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def pkcs8_decrypt_pem(data: bytes, password: bytes) -> bytes:
    """Open an encrypted PKCS#8 PEM and return the plaintext seed-form PKCS#8 DER."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(data, password=password)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
