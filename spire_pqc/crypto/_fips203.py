"""Pure-Python FIPS 203 checks that must not depend on which backend is loaded."""

from __future__ import annotations

from spire_pqc.errors import InvalidKeyError

_Q = 3329
_K = 3  # ML-KEM-768
_EK_LEN = 384 * _K + 32


def check_encapsulation_key(ek: bytes) -> None:
    """FIPS 203 §7.2 input check: length, and ByteEncode12(ByteDecode12(ek)) == ek (all coefficients < q)."""
    if len(ek) != _EK_LEN:
        raise InvalidKeyError(f"ML-KEM-768 encapsulation key must be {_EK_LEN} bytes, got {len(ek)}")
    body = ek[: 384 * _K]
    for i in range(0, len(body), 3):
        b0, b1, b2 = body[i], body[i + 1], body[i + 2]
        if (b0 | ((b1 & 0x0F) << 8)) >= _Q or ((b1 >> 4) | (b2 << 4)) >= _Q:
            raise InvalidKeyError("ML-KEM-768 encapsulation key fails the FIPS 203 modulus check")
