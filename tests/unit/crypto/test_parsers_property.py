"""Property tests: parsers of outside bytes raise only spire_pqc errors, never anything else.

Inputs are arbitrary bytes, PEM armour around arbitrary bytes, and valid encodings with random
mutations (so the search also reaches the deep branches behind a correct prefix).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spire_pqc._internal.der import (
    OCTET_STRING,
    DerReader,
    decode_oid,
    integer,
    read_integer,
    read_single,
    sequence,
    tlv,
)
from spire_pqc.crypto.hybrid import (
    X25519MLKEM768PrivateKey,
    x25519mlkem768_encapsulate,
)
from spire_pqc.crypto.keys import pem_encode
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.crypto.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from spire_pqc.errors import InvalidContextError, InvalidKeyError, ParseError
from tests.unit.credentials.fuzz import PROPERTY
from tests.unit.crypto._pkcs8 import encrypted_pem, unknown_algorithm_pkcs8

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_DSA = MLDSA65PrivateKey.from_seed(bytes(range(32)))
_KEM = MLKEM768PrivateKey.from_seed(bytes(range(64)))
_HYBRID = X25519MLKEM768PrivateKey.generate()
VALID = [
    _DSA.public_key().spki(),
    _KEM.public_key().spki(),
    _DSA.pkcs8(),
    _KEM.pkcs8(),
]

PARSERS: dict[str, Callable[[bytes], Any]] = {
    "MLDSA65PublicKey.from_spki": MLDSA65PublicKey.from_spki,
    "MLKEM768PublicKey.from_spki": MLKEM768PublicKey.from_spki,
    "MLDSA65PrivateKey.from_pkcs8": MLDSA65PrivateKey.from_pkcs8,
    "MLKEM768PrivateKey.from_pkcs8": MLKEM768PrivateKey.from_pkcs8,
}
PEM_PARSERS: dict[str, Callable[[bytes], Any]] = {
    "MLDSA65PublicKey.from_pem": MLDSA65PublicKey.from_pem,
    "MLKEM768PublicKey.from_pem": MLKEM768PublicKey.from_pem,
    "MLDSA65PrivateKey.from_pem": MLDSA65PrivateKey.from_pem,
    "MLKEM768PrivateKey.from_pem": MLKEM768PrivateKey.from_pem,
    "MLDSA65PrivateKey.from_pem(password)": lambda data: MLDSA65PrivateKey.from_pem(data, password=b"pw"),
}


def _only_typed_errors(parser: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(InvalidKeyError, ParseError):
        parser(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid SPKI or PKCS#8 with bytes flipped, cut, inserted or appended."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "append"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def structured_pkcs8(draw: st.DrawFn) -> bytes:
    """OneAsymmetricKey-shaped DER with random parts (long fields need multi-byte lengths)."""
    algorithm = tlv(
        draw(st.sampled_from([0x30, 0x31, 0x04, 0x06])),
        draw(st.binary(max_size=8) | st.binary(min_size=120, max_size=400)),
    )
    private = tlv(
        OCTET_STRING, draw(st.sampled_from([b"\x80", b"\x04", b"\x30", b""])) + draw(st.binary(max_size=80))
    )
    return sequence(integer(draw(st.integers(0, 300))), algorithm, private)


der_inputs = st.one_of(st.binary(max_size=200), mutated(), structured_pkcs8())


@SETTINGS
@given(data=der_inputs, name=st.sampled_from(sorted(PARSERS)))
def test_der_key_parsers(data: bytes, name: str) -> None:
    _only_typed_errors(PARSERS[name], data)


@st.composite
def pem_inputs(draw: st.DrawFn) -> bytes:
    label = draw(st.sampled_from(["PUBLIC KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "CERTIFICATE"]))
    body = draw(der_inputs)
    if draw(st.booleans()):
        return pem_encode(label, body)
    # Hand-made armour with possibly broken base64 and extra text around it.
    text = base64.b64encode(body)
    if draw(st.booleans()) and text:
        cut = draw(st.integers(0, len(text) - 1))
        text = text[:cut] + draw(st.sampled_from([b"!", b"=", b"\n", b"A"])) + text[cut:]
    prefix = draw(st.binary(max_size=16))
    return (
        prefix
        + b"-----BEGIN "
        + label.encode()
        + b"-----\n"
        + text
        + b"\n-----END "
        + label.encode()
        + b"-----\n"
    )


@SETTINGS
@given(data=st.one_of(pem_inputs(), st.binary(max_size=300)), name=st.sampled_from(sorted(PEM_PARSERS)))
def test_pem_key_parsers(data: bytes, name: str) -> None:
    _only_typed_errors(PEM_PARSERS[name], data)


@SETTINGS
@given(data=der_inputs)
def test_der_reader_walks_any_input(data: bytes) -> None:
    """Read TLVs (and into constructed ones) until the end or a ParseError."""
    pending = [data]
    try:
        while pending:
            reader = DerReader(pending.pop(), what="fuzz")
            while not reader.at_end():
                tag, value = reader.read()
                if tag & 0x20:
                    pending.append(value)
                elif tag == 0x02:
                    read_integer(value, what="fuzz")
                elif tag == 0x06:
                    decode_oid(value)
    except ParseError:
        pass


@SETTINGS
@given(data=der_inputs, tag=st.sampled_from([0x02, 0x04, 0x30]))
def test_read_single(data: bytes, tag: int) -> None:
    try:
        value = read_single(data, tag, what="fuzz")
    except ParseError:
        return
    # On success the input was exactly one TLV with that tag around the value.
    assert data[0] == tag
    assert data.endswith(value)


@SETTINGS
@given(value=st.binary(max_size=16))
def test_read_integer_and_decode_oid(value: bytes) -> None:
    for parse in (lambda v: read_integer(v, what="fuzz"), decode_oid):
        with contextlib.suppress(ParseError):
            parse(value)


# --- encrypted PKCS#8 around any inner structure ------------------------------------------------


@PROPERTY
@given(inner=der_inputs | st.just(unknown_algorithm_pkcs8()), password=st.sampled_from([b"pw", b"other"]))
def test_encrypted_pem_of_any_inner_structure(inner: bytes, password: bytes) -> None:
    """Regression class of issue 9: an encrypted PKCS#8 whose inner key cryptography does not know
    raised UnsupportedAlgorithm. Correct encryption, any inner DER, right or wrong password."""
    pem = encrypted_pem(inner, b"pw", iterations=1)
    for parse in (MLDSA65PrivateKey.from_pem, MLKEM768PrivateKey.from_pem):
        _only_typed_errors(lambda data, parse=parse: parse(data, password=password), pem)  # type: ignore[misc]


# --- ML-DSA contexts and hybrid key exchange inputs ---------------------------------------------


@PROPERTY
@given(
    context=st.sampled_from([0, 1, 254, 255, 256, 257, 300, 70_000]).map(bytes) | st.binary(max_size=300),
    message=st.binary(max_size=64),
)
def test_mldsa_any_context(context: bytes, message: bytes) -> None:
    """Contexts up to 255 bytes sign and verify; longer ones are InvalidContextError, never ValueError."""
    try:
        signature = _DSA.sign(message, context=context)
    except InvalidContextError:
        assert len(context) > 255
        with pytest.raises(InvalidContextError):
            _DSA.public_key().verify(bytes(3309), message, context=context)
        return
    _DSA.public_key().verify(signature, message, context=context)


_SHARE_LENGTHS = st.sampled_from([0, 31, 32, 33, 1088, 1119, 1120, 1121, 1184, 1215, 1216, 1217])
_SEED = st.sampled_from([32, 64, 64, 64, 63, 65]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@PROPERTY
@given(
    mlkem_seed=_SEED,
    x25519=st.sampled_from([31, 32, 32, 33, 0]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    share=_SHARE_LENGTHS.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
def test_hybrid_key_exchange_inputs(mlkem_seed: bytes, x25519: bytes, share: bytes) -> None:
    with contextlib.suppress(InvalidKeyError):
        X25519MLKEM768PrivateKey.from_seeds(mlkem_seed, x25519)
    with contextlib.suppress(InvalidKeyError):
        x25519mlkem768_encapsulate(share)
    with contextlib.suppress(InvalidKeyError):
        _HYBRID.decapsulate(share)
