"""Pure-Python FIPS 203 checks that must not depend on which backend is loaded."""

from __future__ import annotations

from spire_pqc.errors import InvalidKeyError

_Q = 3329  # 0xD01
_K = 3  # ML-KEM-768
_EK_LEN = 384 * _K + 32


def _table(predicate: object) -> bytes:
    assert callable(predicate)
    return bytes(1 if predicate(b) else 0 for b in range(256))


# Each 3-byte group b0 b1 b2 holds two 12-bit coefficients: c1 = b0 | (b1 & 0xF) << 8 and
# c2 = b1 >> 4 | b2 << 4. With q = 0xD01: c1 >= q  <=>  low(b1) > 0xD, or low(b1) == 0xD and b0 != 0;
# c2 >= q  <=>  b2 > 0xD0, or b2 == 0xD0 and high(b1) != 0. These tables map a byte to 1 where a
# condition holds, so whole columns are tested at once (bytes.translate, and int AND/OR of 0/1 bytes).
_LOW_GT_D = _table(lambda b: b & 0x0F > 0x0D)
_LOW_EQ_D = _table(lambda b: b & 0x0F == 0x0D)
_NONZERO = _table(lambda b: b != 0)
_GT_D0 = _table(lambda b: b > 0xD0)
_EQ_D0 = _table(lambda b: b == 0xD0)
_HIGH_NONZERO = _table(lambda b: b >> 4 != 0)


def _flags(column: bytes, table: bytes) -> int:
    return int.from_bytes(column.translate(table), "big")


def check_encapsulation_key(ek: bytes) -> None:
    """FIPS 203 §7.2 input check: length, and ByteEncode12(ByteDecode12(ek)) == ek (all coefficients < q)."""
    if len(ek) != _EK_LEN:
        raise InvalidKeyError(f"ML-KEM-768 encapsulation key must be {_EK_LEN} bytes, got {len(ek)}")
    body = ek[: 384 * _K]
    b0, b1, b2 = body[0::3], body[1::3], body[2::3]
    c1_too_big = _flags(b1, _LOW_GT_D) | (_flags(b1, _LOW_EQ_D) & _flags(b0, _NONZERO))
    c2_too_big = _flags(b2, _GT_D0) | (_flags(b2, _EQ_D0) & _flags(b1, _HIGH_NONZERO))
    if c1_too_big | c2_too_big:
        raise InvalidKeyError("ML-KEM-768 encapsulation key fails the FIPS 203 modulus check")
