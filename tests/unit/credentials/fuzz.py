"""Shared hypothesis strategies for the parser property tests: "only spire-pqc's own errors, in time".

Random bytes rarely get past the first length check, so the strategies here start from valid
encodings and change them in ways that reach deep code:

* :class:`Variant` / :data:`EDITED`: byte-level edits (flip, cut, insert, append) of a valid value;
* :func:`der_values`: random DER TLVs, nested, with the tags X.509 uses;
* :func:`resigned_certificates`: a valid certificate with one TBSCertificate field, or one
  extension value, replaced (by random DER, an edit of the original, or a known-hostile value)
  and signed again by the real issuer, so the certificate passes every signature check and the
  malformed part reaches the code that reads it.

Each property test runs with :data:`PROPERTY`: a bounded number of examples and a per-example
deadline far above what a well-behaved parser needs (milliseconds), so a parser that goes
super-linear on crafted input fails the test instead of slowing CI down.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from cryptography import x509
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from spire_pqc._internal import der
from spire_pqc.errors import ParseError

from .certedit import (
    EXTENSIONS,
    ISSUER,
    SAN_WITH_X400_ADDRESS,
    SERIAL,
    SPKI,
    SUBJECT,
    VALIDITY,
    VERSION,
    Parts,
    Signer,
    extension,
    extensions_field,
    extensions_of,
    name_with_bit_string_cn,
    truncated_spki,
)

_EXAMPLES = int(os.environ.get("SPIRE_PQC_FUZZ_EXAMPLES", "100"))

#: Settings of every parser property test: bounded examples (``SPIRE_PQC_FUZZ_EXAMPLES`` raises the
#: count for a long local run), and a time bound per example.
PROPERTY = settings(
    max_examples=_EXAMPLES,
    deadline=dt.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Three times the examples, for the boundaries that peers reach first (proofs, signed messages).
PROPERTY_DEEP = settings(PROPERTY, max_examples=3 * _EXAMPLES)


@dataclass(frozen=True)
class Variant:
    """How to derive a field from its valid value: keep it, edit it, or replace it.

    Strategies draw these small descriptions rather than the derived bytes, so a failing example
    prints as a few edits instead of kilobytes of certificate DER.
    """

    kind: str  # "valid", "edit" or "random"
    edits: tuple[tuple[str, int, bytes], ...] = ()
    data: bytes = b""

    def apply(self, valid: bytes) -> bytes:
        if self.kind == "valid":
            return valid
        if self.kind == "random":
            return self.data
        out = bytearray(valid)
        for action, where, payload in self.edits:
            position = where % len(out) if out else 0
            if action == "flip" and out:
                out[position] ^= payload[0] or 1
            elif action == "truncate":
                del out[position:]
            elif action == "insert":
                out[position:position] = payload
            else:
                out += payload
        return bytes(out)


EDIT = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "append", "flip", "flip"]),
    st.integers(0, 1 << 16),
    st.binary(min_size=1, max_size=6),
)
EDITED = st.lists(EDIT, min_size=1, max_size=4).map(lambda e: Variant("edit", tuple(e)))


def variants(*, random_size: int = 64) -> st.SearchStrategy[Variant]:
    return st.one_of(
        st.just(Variant("valid")),
        EDITED,
        st.binary(max_size=random_size).map(lambda b: Variant("random", data=b)),
    )


# Universal tags X.509 uses, plus the context-specific ones of TBSCertificate and GeneralName.
_PRIMITIVE_TAGS = [
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x0C,
    0x13,
    0x16,
    0x17,
    0x18,
    0x1E,
    0x80,
    0x81,
    0x82,
    0x86,
    0x87,
]
_CONSTRUCTED_TAGS = [0x30, 0x31, 0xA0, 0xA3, 0xA4]


def der_values(*, max_leaves: int = 6) -> st.SearchStrategy[bytes]:
    """Random DER: primitive TLVs with random contents, nested in SEQUENCE/SET/[n] containers."""
    leaf = st.builds(der.tlv, st.sampled_from(_PRIMITIVE_TAGS), st.binary(max_size=24))
    oid = st.sampled_from(["2.5.4.3", "2.5.4.6", "2.5.29.17", "2.5.29.19", "2.16.840.1.101.3.4.3.18"]).map(
        der.encode_oid
    )
    return st.recursive(
        leaf | oid,
        lambda inner: st.builds(
            lambda tag, items: der.tlv(tag, b"".join(items)),
            st.sampled_from(_CONSTRUCTED_TAGS),
            st.lists(inner, max_size=3),
        ),
        max_leaves=max_leaves,
    )


# --- structured values per TBSCertificate field ------------------------------------------------

_NAME_OIDS = [
    "2.5.4.3",
    "2.5.4.6",
    "2.5.4.10",
    "2.5.4.11",
    "2.5.4.5",
    "2.5.4.45",
    "0.9.2342.19200300.100.1.25",
]
_STRING_TAGS = [0x0C, 0x13, 0x16, 0x1E, 0x1C, 0x14, 0x03, 0x02, 0x04, 0x05, 0x30]
_KEY_OIDS = [
    "2.16.840.1.101.3.4.3.17",  # ML-DSA-44
    "2.16.840.1.101.3.4.3.18",  # ML-DSA-65
    "2.16.840.1.101.3.4.3.19",  # ML-DSA-87
    "2.16.840.1.101.3.4.4.2",  # ML-KEM-768
    "1.2.840.10045.2.1",  # id-ecPublicKey
    "1.3.101.112",  # Ed25519
    "1.3.6.1.4.1.99999.1",  # unknown
]
_EXTENSION_OIDS = [
    "2.5.29.14", "2.5.29.15", "2.5.29.17", "2.5.29.19", "2.5.29.35", "2.5.29.37", "2.5.29.30",
    "1.3.6.1.5.5.7.1.36", "2.25.1713860176.1",
]  # fmt: skip


def names() -> st.SearchStrategy[bytes]:
    """Name: a SEQUENCE of SETs of (attribute OID, value) with any ASN.1 type for the value."""
    attribute = st.builds(
        lambda oid, tag, value: der.sequence(der.encode_oid(oid), der.tlv(tag, value)),
        st.sampled_from(_NAME_OIDS),
        st.sampled_from(_STRING_TAGS),
        st.binary(max_size=12) | st.sampled_from([b"\x00A", b"US", b"example.org"]),
    )
    rdn = st.lists(attribute, min_size=0, max_size=2).map(lambda a: der.tlv(0x31, b"".join(a)))
    return st.lists(rdn, max_size=3).map(lambda r: der.sequence(*r))


def public_key_infos(cert: x509.Certificate) -> st.SearchStrategy[bytes]:
    """SubjectPublicKeyInfo: any known algorithm, a key of about the right length (or the
    certificate's own key cut short)."""
    lengths = st.sampled_from([0, 1, 32, 33, 65, 1183, 1184, 1311, 1312, 1951, 1952, 1953, 2591, 2592])
    made = st.builds(
        lambda oid, length, unused: der.sequence(
            der.sequence(der.encode_oid(oid)), der.tlv(der.BIT_STRING, bytes([unused]) + bytes(length))
        ),
        st.sampled_from(_KEY_OIDS),
        lengths,
        st.sampled_from([0, 0, 0, 1, 8]),
    )
    if cert.public_key_algorithm_oid.dotted_string.startswith("2.16.840"):
        return made | st.integers(1, 40).map(lambda n: truncated_spki(cert, drop=n))
    return made


def times() -> st.SearchStrategy[bytes]:
    text = st.text(alphabet="0123456789Z+-.", min_size=0, max_size=17).map(str.encode)
    return st.builds(der.tlv, st.sampled_from([0x17, 0x18, 0x13]), text | st.just(b"991301000000Z"))


def extensions_fields(cert: x509.Certificate) -> st.SearchStrategy[bytes]:
    """The extensions field: the certificate's own ones plus a duplicate, an unknown critical one,
    or an extension of a known type with a random value; or an empty list."""
    own = extensions_of(cert)
    extra = st.builds(
        lambda oid, critical, value: extension(oid, value, critical=critical),
        st.sampled_from([*_EXTENSION_OIDS, "1.3.6.1.4.1.99999.2"]),
        st.booleans(),
        der_values() | st.binary(max_size=16),
    )
    return st.one_of(
        st.sampled_from(
            [extensions_field(*own, own[0]), extensions_field(SAN_WITH_X400_ADDRESS), extensions_field()]
        ),
        extra.map(lambda e: extensions_field(*own, e)),
        extra.map(extensions_field),
    )


def structured_fields(cert: x509.Certificate) -> dict[int, st.SearchStrategy[bytes]]:
    return {
        VERSION: st.integers(0, 300).map(lambda v: der.tlv(0xA0, der.integer(v))),
        SERIAL: st.binary(min_size=1, max_size=25).map(lambda b: der.tlv(der.INTEGER, b)),
        ISSUER: names() | st.just(name_with_bit_string_cn()),
        VALIDITY: st.builds(der.sequence, times(), times()),
        SUBJECT: names() | st.just(name_with_bit_string_cn()),
        SPKI: public_key_infos(cert),
        EXTENSIONS: extensions_fields(cert),
    }


@st.composite
def resigned_certificates(draw: st.DrawFn, cert: x509.Certificate, signer: Signer) -> bytes:
    """``cert`` with one TBS field or one extension value changed, signed again by ``signer``.

    Half the examples replace a field with a structured value of its own type (a Name with any
    ASN.1 type in an attribute, a key of any algorithm and about the right length, any version),
    the rest edit one extension value or one field's bytes.
    """
    parts = Parts.of(cert)
    mode = draw(st.sampled_from(["structured", "structured", "extension", "field"]))
    if mode == "structured":
        index, strategy = draw(st.sampled_from(sorted(structured_fields(cert).items())))
        return parts.replace(index, draw(strategy)).sign(signer)
    if mode == "extension":
        exts = extensions_of(cert)
        index = draw(st.integers(0, len(exts) - 1))
        reader = der.DerReader(der.read_single(exts[index], der.SEQUENCE, what="extension"))
        items = []
        while not reader.at_end():
            items.append(reader.read())
        *head, (_, value) = items  # extnID, [critical,] extnValue
        new_value = draw(st.one_of(EDITED.map(lambda v: v.apply(value)), der_values()))
        exts[index] = der.sequence(*(der.tlv(*item) for item in head), der.tlv(der.OCTET_STRING, new_value))
        return parts.replace(EXTENSIONS, extensions_field(*exts)).sign(signer)
    index = draw(st.integers(0, len(parts.fields) - 1))
    original = der.tlv(*parts.fields[index])
    replacement = draw(st.one_of(EDITED.map(lambda v: v.apply(original)), der_values()))
    try:
        edited = parts.replace(index, replacement)
    except ParseError:
        return parts.sign(signer)  # the edit did not leave one TLV: keep the field as it was
    return edited.sign(signer)
