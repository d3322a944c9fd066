"""Post-quantum primitives for spire-pqc ("hazmat": knows nothing about SPIFFE).

* :mod:`.mldsa` - ML-DSA-65 keys, sign/verify with FIPS 204 context strings.
* :mod:`.mlkem` - ML-KEM-768 keys, encapsulate/decapsulate.
* :mod:`.hybrid` - X25519MLKEM768 (TLS layout).
* :mod:`.keys` - SPKI / seed-form PKCS#8 / PEM and the explicit :class:`NoEncryption` /
  :class:`PasswordEncryption` choice.
* :mod:`.aio` - the same operations off the event loop.

The backend (``openssl`` via cryptography, or ``liboqs``) is chosen once per process; see
:func:`backend_name` and ``SPIRE_PQC_BACKEND``.

Example::

    from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
    key = MLDSA65PrivateKey.generate()
    sig = key.sign(b"hello", context=b"example/v1")
    key.public_key().verify(sig, b"hello", context=b"example/v1")
"""

from __future__ import annotations

from spire_pqc.crypto import _backend
from spire_pqc.crypto.keys import KeyEncryption, NoEncryption, PasswordEncryption


def backend_name() -> str:
    """Name of the PQ backend this process uses (choosing it now if not chosen yet)."""
    return _backend.backend().name


def select_backend(name: str) -> str:
    """Choose the backend (``auto``, ``openssl`` or ``liboqs``) before first use; returns its name."""
    return _backend.select_backend(name).name


__all__ = ["KeyEncryption", "NoEncryption", "PasswordEncryption", "backend_name", "select_backend"]
