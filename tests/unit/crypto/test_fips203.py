"""The FIPS 203 §7.2 encapsulation-key check (column-wise) against the coefficient-by-coefficient definition."""

from __future__ import annotations

import os

import pytest

from spire_pqc.crypto._fips203 import check_encapsulation_key
from spire_pqc.errors import InvalidKeyError

Q = 3329


def _reference_ok(ek: bytes) -> bool:
    body = ek[:1152]
    for i in range(0, len(body), 3):
        b0, b1, b2 = body[i], body[i + 1], body[i + 2]
        if (b0 | ((b1 & 0x0F) << 8)) >= Q or ((b1 >> 4) | (b2 << 4)) >= Q:
            return False
    return True


def _ok(ek: bytes) -> bool:
    try:
        check_encapsulation_key(ek)
    except InvalidKeyError:
        return False
    return True


def test_every_byte_pair_of_both_coefficients_matches_the_definition() -> None:
    """Exhaustive: c1 depends on (b0, b1) and c2 on (b1, b2); every pair, at a moving triple position."""
    base = bytearray(1184)
    mismatches = []
    for first in range(256):
        for second in range(256):
            for offset in (0, 1):  # (b0, b1) pairs, then (b1, b2) pairs
                triple = 3 * ((first * 256 + second) % 384)
                ek = bytearray(base)
                ek[triple + offset], ek[triple + offset + 1] = first, second
                if _ok(bytes(ek)) != _reference_ok(bytes(ek)):
                    mismatches.append((offset, first, second))
    assert not mismatches[:5]


def test_random_keys_and_wrong_lengths() -> None:
    for _ in range(2000):
        ek = os.urandom(1184)
        assert _ok(ek) == _reference_ok(ek)
    for length in (0, 1183, 1185):
        with pytest.raises(InvalidKeyError, match="1184 bytes"):
            check_encapsulation_key(bytes(length))
