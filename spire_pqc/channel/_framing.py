"""The one wire framing of "a certificate chain plus a signature", shared by PQ proofs and signed messages.

    count (1 byte) | count * (length (4 bytes, big endian) | DER certificate) | length (2 bytes) | signature

Parsing is strict: the count is bounded, every length must fit the input, every certificate is fully
parsed (spire_pqc.x509.load), and nothing may follow the signature. Errors come from the caller's
``bad`` so each use keeps its own typed error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc.errors import ParseError
from spire_pqc.x509.load import load_der_certificate

MAX_CERTS = 8


def encode_chain_and_signature(chain: Sequence[x509.Certificate], signature: bytes) -> bytes:
    parts = [bytes([len(chain)])]
    for cert in chain:
        raw = cert.public_bytes(serialization.Encoding.DER)
        parts += [struct.pack(">I", len(raw)), raw]
    parts += [struct.pack(">H", len(signature)), signature]
    return b"".join(parts)


def decode_chain_and_signature(
    data: bytes, bad: Callable[[str], Exception], *, what: str
) -> tuple[tuple[x509.Certificate, ...], bytes]:
    if not data:
        raise bad("empty")
    count, offset = data[0], 1
    if not 1 <= count <= MAX_CERTS:
        raise bad(f"chain must have 1..{MAX_CERTS} certificates, has {count}")
    chain = []
    for index in range(count):
        if offset + 4 > len(data):
            raise bad("truncated certificate length")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise bad(f"certificate {index} truncated")
        try:
            chain.append(load_der_certificate(data[offset : offset + length], what=f"certificate {index}"))
        except ParseError as exc:
            raise bad(str(exc)) from exc
        offset += length
    if offset + 2 > len(data):
        raise bad("truncated signature length")
    (sig_len,) = struct.unpack_from(">H", data, offset)
    offset += 2
    if offset + sig_len != len(data):
        raise bad(f"signature length does not match the {what}")
    return tuple(chain), data[offset:]
