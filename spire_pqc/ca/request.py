"""The PQC issue request (docs/formats.md, "Issue request") and its two proofs of possession.

Both proofs sign the same bytes::

    IssueTBS ::= SEQUENCE {
      version          INTEGER (1),
      classicalLeafHash OCTET STRING,   -- SHA-256 of the classical SVID leaf DER
      mldsaSpki        OCTET STRING,    -- ML-DSA-65 SubjectPublicKeyInfo DER
      mlkemSpki        OCTET STRING,    -- ML-KEM-768 SubjectPublicKeyInfo DER
      timestampMs      INTEGER,         -- Unix milliseconds
      nonce            OCTET STRING }   -- 16..64 random bytes

* classical proof: the classical SVID key over ``"spire-pqc/issue/v1" || 0x00 || IssueTBS``
  (ECDSA with SHA-256/384 by curve, RSA-PSS with SHA-256, or Ed25519); the prefix separates this
  use from any other signature the SVID key makes.
* ML-DSA proof: the new ML-DSA-65 key over ``IssueTBS`` with FIPS 204 context "spire-pqc/issue/v1".

The ML-KEM-768 key cannot sign; it is certified as presented, and only its holder can use it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from spire_pqc._internal import der
from spire_pqc.crypto.mldsa import MLDSA65PrivateKey

CONTEXT = b"spire-pqc/issue/v1"
CLASSICAL_PREFIX = CONTEXT + b"\x00"
NONCE_MIN, NONCE_MAX = 16, 64
MAX_CHAIN_CERTS = 8
MAX_CERT_BYTES = 64 * 1024


@dataclass(frozen=True)
class IssueRequest:
    """One issuance request, as it travels (DER certificates and SPKIs, raw signatures)."""

    classical_chain: tuple[bytes, ...]
    mldsa_spki: bytes
    mlkem_spki: bytes
    timestamp_ms: int
    nonce: bytes
    classical_proof: bytes
    mldsa_proof: bytes

    def to_be_signed(self) -> bytes:
        return to_be_signed(
            self.classical_chain[0], self.mldsa_spki, self.mlkem_spki, self.timestamp_ms, self.nonce
        )


@dataclass(frozen=True)
class IssueResponse:
    pqc_svid_chain: tuple[bytes, ...]
    kem_certificate_chain: tuple[bytes, ...]
    pqc_bundle: tuple[bytes, ...]
    # The trust domain's PQC JWT bundle (JWK Set) when the CA sends one (docs/pq-jwt.md).
    pqc_jwt_bundle: bytes = b""
    # Key ids of revoked intermediates, as the CA knows them when it answers (never stored in the ledger).
    revoked_intermediates: tuple[str, ...] = ()


@dataclass(frozen=True)
class BundleUpdate:
    """What the CA says about its trust domain's PQC trust now: roots (DER), revoked key ids and the
    PQC JWT bundle (JWK Set; empty: not sent)."""

    trust_domain: str
    pqc_bundle: tuple[bytes, ...]
    revoked_intermediates: tuple[str, ...]
    pqc_jwt_bundle: bytes = b""
    # The CA's clock when it answered (Unix ms); None when it did not say (a CA older than the field).
    server_time_ms: int | None = None


def to_be_signed(
    classical_leaf_der: bytes, mldsa_spki: bytes, mlkem_spki: bytes, timestamp_ms: int, nonce: bytes
) -> bytes:
    return der.sequence(
        der.integer(1),
        der.tlv(der.OCTET_STRING, hashlib.sha256(classical_leaf_der).digest()),
        der.tlv(der.OCTET_STRING, mldsa_spki),
        der.tlv(der.OCTET_STRING, mlkem_spki),
        der.integer(max(0, timestamp_ms)),
        der.tlv(der.OCTET_STRING, nonce),
    )


def sign_classical(key: PrivateKeyTypes, message: bytes) -> bytes:
    """The classical proof over ``CLASSICAL_PREFIX || message`` with the SVID key's natural scheme."""
    data = CLASSICAL_PREFIX + message
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(_ec_hash(key.curve)))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(
            data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256()
        )
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise TypeError(f"unsupported classical SVID key type {type(key).__name__}")


def verify_classical(key: PublicKeyTypes, signature: bytes, message: bytes) -> bool:
    data = CLASSICAL_PREFIX + message
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_ec_hash(key.curve)))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(
                signature,
                data,
                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                hashes.SHA256(),
            )
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _ec_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    return hashes.SHA384() if curve.key_size >= 384 else hashes.SHA256()


def build_request(
    classical_chain: tuple[bytes, ...],
    classical_key: PrivateKeyTypes,
    mldsa_key: MLDSA65PrivateKey,
    mlkem_spki: bytes,
    *,
    timestamp_ms: int,
    nonce: bytes | None = None,
) -> IssueRequest:
    """Client side: assemble and sign a request (the node agent does this for each workload)."""
    nonce = nonce if nonce is not None else os.urandom(32)
    mldsa_spki = mldsa_key.public_key().spki()
    tbs = to_be_signed(classical_chain[0], mldsa_spki, mlkem_spki, timestamp_ms, nonce)
    return IssueRequest(
        classical_chain=classical_chain,
        mldsa_spki=mldsa_spki,
        mlkem_spki=mlkem_spki,
        timestamp_ms=timestamp_ms,
        nonce=nonce,
        classical_proof=sign_classical(classical_key, tbs),
        mldsa_proof=mldsa_key.sign(tbs, context=CONTEXT),
    )
