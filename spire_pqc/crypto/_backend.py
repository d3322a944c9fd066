"""Post-quantum backends: with :mod:`._liboqs`, the only modules that import a PQ implementation.

Two backends implement the same small primitive surface over *seeds* and *raw keys* (the key
classes in :mod:`spire_pqc.crypto.mldsa` / :mod:`spire_pqc.crypto.mlkem` own encodings):

* ``openssl`` (default): pyca/cryptography >= 50, whose wheel bundles OpenSSL >= 3.5.
* ``liboqs``: liboqs's C library (:mod:`._liboqs`), used only when asked for.

The backend is chosen once per process, from ``SPIRE_PQC_BACKEND`` (``auto`` | ``openssl`` |
``liboqs``) at first use or by :func:`select_backend`. ``auto`` is ``openssl`` and never looks for
liboqs: the choice then depends only on the installed Python packages - the same for the plugin
process spire-server starts and the agent beside it - never on per-user paths (``HOME``,
``OQS_INSTALL_PATH``) that differ between those processes. liboqs is a deliberate, configured
choice. If the chosen backend is unusable every PQ operation raises
:class:`BackendUnavailableError`; nothing ever falls back to classical crypto or to the other backend.

ML-DSA-65 certificates are encoded by :mod:`spire_pqc.x509.tbs` and signed through the selected backend,
like every other signature; cryptography parses X.509 and builds the classical (ECDSA) certificates.
Verification of our own messages and of PQC certificates goes through the selected backend too.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
    version: str  # of the library doing the PQ arithmetic (OpenSSL's or liboqs's), e.g. "0.16.0"

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

        self.version = cryptography_openssl_version().split()[1]
        self._mldsa = mldsa
        self._mlkem = mlkem
        # OpenSSL keeps the expanded matrix in a public-key object, so encapsulating to a peer we
        # talk to repeatedly is about 2x faster with the parsed object reused (`spire-pqc bench crypto`).
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

    def cryptography_mlkem768_private_key(self, seed: bytes) -> Any:
        return self._mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)

    def cryptography_mlkem768_public_key(self, encapsulation_key: bytes) -> Any:
        return self._mlkem.MLKEM768PublicKey.from_public_bytes(encapsulation_key)

    def cryptography_mldsa65_public_key(self, public_key: bytes) -> Any:
        return self._mldsa.MLDSA65PublicKey.from_public_bytes(public_key)


@dataclass(frozen=True)
class _OpenSSLSigner:
    key: Any

    def sign(self, message: bytes, context: bytes) -> bytes:
        return bytes(self.key.sign(message, context or None))


def cryptography_openssl_version() -> str:
    """The OpenSSL that cryptography's wheel bundles, e.g. ``OpenSSL 4.0.3 29 Sep 2026``."""
    from cryptography.hazmat.backends.openssl.backend import backend as openssl

    return str(openssl.openssl_version_text())


# --- selection ---------------------------------------------------------------------------------

_lock = threading.Lock()
_selected: Backend | None = None
# A backend that failed to load stays failed: every later PQ operation re-raises at once instead of
# searching for (and loading) the library again.
_failed: dict[str, BackendUnavailableError] = {}


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
        from spire_pqc.crypto._liboqs import LiboqsBackend

        return LiboqsBackend()
    if name == "auto":
        reason = _openssl_usable()
        if reason:
            raise BackendUnavailableError(
                f"no post-quantum backend is usable: {reason}; `auto` means openssl (cryptography >= 50), "
                f"set {ENV_VAR}=liboqs to use liboqs; refusing to continue without post-quantum cryptography"
            )
        return _OpenSSLBackend()
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
        if name in _failed:
            raise _failed[name]
        try:
            _selected = _build(name)
        except BackendUnavailableError as exc:
            _failed[name] = exc
            raise
        return _selected


def selected() -> Backend | None:
    """The backend already chosen for this process, without choosing one."""
    return _selected


def backend() -> Backend:
    """The process's backend, chosen from ``SPIRE_PQC_BACKEND`` (default ``auto``) at first use."""
    current = _selected
    if current is not None:
        return current
    return select_backend(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto")


def openssl_helpers() -> _OpenSSLBackend:
    """cryptography key objects for the same seeds (tests craft certificates with cryptography's builder)."""
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
