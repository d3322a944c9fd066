"""Encodings shared by the PQ key types: SubjectPublicKeyInfo, seed-form PKCS#8, PEM, encryption.

The DER layouts are fixed for a given parameter set (RFC 9881 for ML-DSA, RFC 9935 for ML-KEM),
so parsing is an exact prefix-and-length match: nothing else is accepted. Private keys exist only
in *seed* form; the expanded and "both" forms are refused with a clear message.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm

from spire_pqc._internal.der import INTEGER, OCTET_STRING, SEQUENCE, DerReader, read_single, tlv
from spire_pqc.crypto import _backend
from spire_pqc.errors import InvalidKeyError, ParseError

OID_ML_DSA_65 = "2.16.840.1.101.3.4.3.18"
OID_ML_KEM_768 = "2.16.840.1.101.3.4.4.2"

# DER of AlgorithmIdentifier { OID }, parameters absent.
_ALG_ML_DSA_65 = bytes.fromhex("300b0609608648016503040312")
_ALG_ML_KEM_768 = bytes.fromhex("300b0609608648016503040402")


@dataclass(frozen=True)
class _Layout:
    name: str
    algorithm: bytes
    public_len: int
    seed_len: int

    @property
    def spki_prefix(self) -> bytes:
        bit_string = b"\x03" + _der_len(self.public_len + 1) + b"\x00"
        body_len = len(self.algorithm) + len(bit_string) + self.public_len
        return b"\x30" + _der_len(body_len) + self.algorithm + bit_string

    @property
    def pkcs8_prefix(self) -> bytes:
        # OneAsymmetricKey { version 0, algorithm, privateKey OCTET STRING { [0] IMPLICIT seed } }
        seed_choice = b"\x80" + _der_len(self.seed_len)
        octet = b"\x04" + _der_len(len(seed_choice) + self.seed_len)
        body_len = 3 + len(self.algorithm) + len(octet) + len(seed_choice) + self.seed_len
        return b"\x30" + _der_len(body_len) + b"\x02\x01\x00" + self.algorithm + octet + seed_choice


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


MLDSA65_LAYOUT = _Layout("ML-DSA-65", _ALG_ML_DSA_65, _backend.MLDSA65_PUBLIC_LEN, _backend.MLDSA65_SEED_LEN)
MLKEM768_LAYOUT = _Layout(
    "ML-KEM-768", _ALG_ML_KEM_768, _backend.MLKEM768_PUBLIC_LEN, _backend.MLKEM768_SEED_LEN
)


def encode_spki(layout: _Layout, public: bytes) -> bytes:
    return layout.spki_prefix + public


def decode_spki(layout: _Layout, der: bytes) -> bytes:
    prefix = layout.spki_prefix
    if not der.startswith(prefix[:2]) or len(der) != len(prefix) + layout.public_len:
        raise InvalidKeyError(
            f"not an {layout.name} SubjectPublicKeyInfo: expected {len(prefix) + layout.public_len} bytes, "
            f"got {len(der)}"
        )
    if not der.startswith(prefix):
        raise InvalidKeyError(f"SubjectPublicKeyInfo is not {layout.name} (algorithm or encoding differs)")
    return der[len(prefix) :]


def encode_pkcs8(layout: _Layout, seed: bytes) -> bytes:
    return layout.pkcs8_prefix + seed


def decode_pkcs8(layout: _Layout, der: bytes) -> bytes:
    prefix = layout.pkcs8_prefix
    if der.startswith(prefix) and len(der) == len(prefix) + layout.seed_len:
        return der[len(prefix) :]
    raise InvalidKeyError(f"not an {layout.name} seed-form PKCS#8 private key: {_pkcs8_problem(layout, der)}")


def _pkcs8_problem(layout: _Layout, der: bytes) -> str:
    """Explain a rejected PKCS#8, since the expanded form is a common source of confusion."""
    try:
        outer = DerReader(read_single(der, SEQUENCE, what="PKCS#8"), what="PKCS#8")
        outer.expect(INTEGER, "version")
        tag, algorithm = outer.read()
        # Re-encode with tlv(): a long AlgorithmIdentifier needs a multi-byte length.
        if tlv(tag, algorithm) != layout.algorithm:
            return "the algorithm is not " + layout.name
        private = outer.expect(OCTET_STRING, "privateKey")
    except ParseError as exc:
        return str(exc)
    choice = private[:1]
    if choice == b"\x04":
        return "it is in expanded form; only the seed form is accepted"
    if choice == b"\x30":
        return "it is in 'both' (seed + expanded) form; only the seed form is accepted"
    return f"the seed must be {layout.seed_len} bytes in an [0] IMPLICIT OCTET STRING"


# --- PEM ---------------------------------------------------------------------------------------

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----", re.DOTALL)


def pem_encode(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        b"-----BEGIN "
        + label.encode()
        + b"-----\n"
        + b"\n".join(lines)
        + b"\n-----END "
        + label.encode()
        + b"-----\n"
    )


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """All PEM blocks in ``data`` as ``(label, der)``; raises InvalidKeyError on bad base64."""
    blocks = []
    for match in _PEM_RE.finditer(data):
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidKeyError(f"PEM block {match.group(1).decode()!r} has invalid base64") from exc
        blocks.append((match.group(1).decode(), der))
    return blocks


def pem_decode_one(data: bytes, labels: tuple[str, ...]) -> tuple[str, bytes]:
    blocks = [b for b in pem_blocks(data) if b[0] in labels]
    if len(blocks) != 1:
        raise InvalidKeyError(
            f"expected exactly one PEM block labelled {' or '.join(labels)}, found {len(blocks)}"
        )
    return blocks[0]


# --- explicit private-key encryption choice ----------------------------------------------------


class KeyEncryption:
    """How a private key is serialised. There is no default: callers choose one of the two below."""


@dataclass(frozen=True)
class NoEncryption(KeyEncryption):
    """Write the private key in plaintext (protect it with file permissions: 0600)."""


@dataclass(frozen=True, repr=False)
class PasswordEncryption(KeyEncryption):
    """Encrypt the private key with a password (PKCS#8 PBES2)."""

    password: bytes

    def __post_init__(self) -> None:
        if not self.password:
            raise ValueError("an empty password is not encryption; use NoEncryption() explicitly")

    def __repr__(self) -> str:
        return "PasswordEncryption(<redacted>)"


def private_pem(der: bytes, encryption: KeyEncryption) -> bytes:
    if isinstance(encryption, NoEncryption):
        return pem_encode("PRIVATE KEY", der)
    if isinstance(encryption, PasswordEncryption):
        return _backend.pkcs8_encrypt_pem(der, encryption.password)
    raise TypeError("encryption must be NoEncryption() or PasswordEncryption(password)")


def private_der_from_pem(data: bytes, password: bytes | None) -> bytes:
    label, der = pem_decode_one(data, ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"))
    if label == "PRIVATE KEY":
        if password is not None:
            raise InvalidKeyError("a password was given but the private key is not encrypted")
        return der
    if password is None:
        raise InvalidKeyError("the private key is encrypted; a password is required")
    try:
        # Only the one block found above is decrypted, whatever else the input holds.
        return _backend.pkcs8_decrypt_pem(pem_encode(label, der), password)
    except UnsupportedAlgorithm as exc:
        # The encryption scheme, or the key inside, is of an algorithm cryptography does not implement.
        raise InvalidKeyError(f"cannot use the encrypted private key: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidKeyError("cannot decrypt the private key (wrong password or corrupt data)") from exc
