"""JWS with ML-DSA-65 (RFC 7515 compact and detached forms, RFC 9964 ``alg`` and ``AKP`` keys).

This module is the JOSE layer of spire-pqc: strict base64url, the compact serialization split into
bounded, decoded parts, ML-DSA-65 signatures over the RFC 7515 §5.1 signing input
``ASCII(BASE64URL(header) || '.' || BASE64URL(payload))`` with the **empty** FIPS 204 context
(RFC 9964 §5), and public ``AKP`` JWKs with their RFC 7638 thumbprint over ``alg``, ``kty``, ``pub``
(RFC 9964 §6). Nothing here knows about SPIFFE.

Example::

    jwk = AkpPublicJwk(key.public_key())
    token = sign_compact({"alg": "ML-DSA-65", "kid": jwk.thumbprint()}, b64url_encode(payload), key)
    parsed = CompactJws.parse(token, what="token")
    verify_mldsa(parsed, jwk.key)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spire_pqc._internal import strictjson
from spire_pqc.crypto.mldsa import PUBLIC_KEY_LEN, SIGNATURE_LEN, MLDSA65PrivateKey, MLDSA65PublicKey
from spire_pqc.errors import InvalidSignatureError, SpirePqcError, TokenMalformedError, TokenSignatureError

#: The JOSE ``alg`` of ML-DSA-65 and the key type that carries it (RFC 9964 §3, §5).
ALG_ML_DSA_65 = "ML-DSA-65"
KTY_AKP = "AKP"
#: FIPS 204 context of every JOSE ML-DSA signature: RFC 9964 §5 requires the empty string.
JOSE_CONTEXT = b""

#: Upper bound on one compact JWS accepted here. An ML-DSA-65 signature is 4412 base64url
#: characters; SPIRE's JWT-SVIDs are under 1 KB; claims beyond a few KB are not a JWT-SVID.
MAX_COMPACT_BYTES = 64 * 1024
#: Upper bound on a decoded protected header.
MAX_HEADER_BYTES = 4 * 1024

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str, error: type[SpirePqcError] = TokenMalformedError) -> bytes:
    """Strict base64url: the URL-safe alphabet only, no padding, and the canonical encoding (no stray
    bits in the last character), so one value has exactly one spelling."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise error(f"{what} is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} is not base64url ({exc})") from None
    if b64url_encode(data) != text:
        raise error(f"{what} is not canonical base64url")
    return data


@dataclass(frozen=True)
class CompactJws:
    """A compact JWS split into its parts, each decoded and bounded. The payload may be detached
    (RFC 7515 Appendix F: an empty middle segment), in which case ``payload_segment`` is empty."""

    header: Mapping[str, Any]
    header_segment: str
    payload_segment: str
    signature: bytes = field(repr=False)

    @classmethod
    def parse(cls, token: str, *, what: str, max_bytes: int = MAX_COMPACT_BYTES) -> CompactJws:
        if not isinstance(token, str):
            raise TokenMalformedError(f"{what} must be a string, not {type(token).__name__}")
        if len(token) > max_bytes:
            raise TokenMalformedError(f"{what} is {len(token)} bytes, over the limit of {max_bytes}")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenMalformedError(f"{what} has {len(parts)} dot-separated parts; a compact JWS has 3")
        header_segment, payload_segment, signature_segment = parts
        if len(header_segment) > MAX_HEADER_BYTES * 4 // 3 + 4:
            raise TokenMalformedError(f"{what}: protected header over {MAX_HEADER_BYTES} bytes")
        header_bytes = b64url_decode(header_segment, what=f"{what}: protected header")
        header = strictjson.loads(
            header_bytes,
            what=f"{what}: protected header",
            max_bytes=MAX_HEADER_BYTES,
            error=TokenMalformedError,
        )
        if not isinstance(header, dict):
            raise TokenMalformedError(f"{what}: protected header is not a JSON object")
        # The payload is checked for base64url now (its JSON by whoever reads the claims).
        b64url_decode(payload_segment, what=f"{what}: payload")
        signature = b64url_decode(signature_segment, what=f"{what}: signature")
        if not signature:
            raise TokenMalformedError(f"{what} has an empty signature")
        return cls(header, header_segment, payload_segment, signature)

    def signing_input(self, payload_segment: str | None = None) -> bytes:
        """RFC 7515 §5.1 step 6: ``ASCII(header segment '.' payload segment)``. For a detached JWS,
        pass the payload segment it was made over."""
        payload = self.payload_segment if payload_segment is None else payload_segment
        return f"{self.header_segment}.{payload}".encode("ascii")

    def payload(self) -> bytes:
        return b64url_decode(self.payload_segment, what="payload")

    def header_str(self, name: str) -> str | None:
        """A header parameter that must be a string when present."""
        value = self.header.get(name)
        if value is not None and not isinstance(value, str):
            raise TokenMalformedError(f"header parameter {name!r} must be a string")
        return value


def sign_compact(header: Mapping[str, Any], payload_segment: str, key: MLDSA65PrivateKey) -> str:
    """An ML-DSA-65 compact JWS over ``payload_segment`` (already base64url) with ``header``.

    ``header["alg"]`` must be ``ML-DSA-65``: the algorithm is never taken from anywhere else.
    """
    if header.get("alg") != ALG_ML_DSA_65:
        raise ValueError(f"an ML-DSA-65 JWS needs alg {ALG_ML_DSA_65!r} in its header")
    header_segment = b64url_encode(strictjson.dumps_compact(dict(header)))
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    signature = key.sign(signing_input, context=JOSE_CONTEXT)
    return f"{header_segment}.{payload_segment}.{b64url_encode(signature)}"


def verify_mldsa(
    jws: CompactJws,
    key: MLDSA65PublicKey,
    *,
    payload_segment: str | None = None,
    spiffe_id: str | None = None,
) -> None:
    """Raise TokenSignatureError unless ``jws`` carries a valid ML-DSA-65 signature by ``key``."""
    if len(jws.signature) != SIGNATURE_LEN:
        raise TokenSignatureError(
            f"ML-DSA-65 signature is {len(jws.signature)} bytes, not {SIGNATURE_LEN}", spiffe_id=spiffe_id
        )
    try:
        key.verify(jws.signature, jws.signing_input(payload_segment), context=JOSE_CONTEXT)
    except InvalidSignatureError:
        raise TokenSignatureError("ML-DSA-65 signature does not verify", spiffe_id=spiffe_id) from None


@dataclass(frozen=True)
class AkpPublicJwk:
    """A public ML-DSA-65 key as an RFC 9964 ``AKP`` JWK."""

    key: MLDSA65PublicKey

    def thumbprint(self) -> str:
        """RFC 7638 thumbprint (SHA-256) over the required members ``alg``, ``kty``, ``pub``
        (RFC 9964 §6), base64url: the ``kid`` spire-pqc gives every AKP key."""
        members = {"alg": ALG_ML_DSA_65, "kty": KTY_AKP, "pub": b64url_encode(self.key.raw())}
        return b64url_encode(hashlib.sha256(strictjson.dumps_compact(members)).digest())

    def to_json(self) -> dict[str, Any]:
        """The JWK members ``kty``, ``alg``, ``pub`` and ``kid`` (the thumbprint)."""
        return {
            "kty": KTY_AKP,
            "alg": ALG_ML_DSA_65,
            "pub": b64url_encode(self.key.raw()),
            "kid": self.thumbprint(),
        }

    @classmethod
    def from_json(cls, jwk: Mapping[str, Any], *, what: str, error: type[SpirePqcError]) -> AkpPublicJwk:
        """Parse a public AKP JWK for ML-DSA-65. Private material (``priv``) is refused: a key set
        that carries it has leaked a signing key, and using it would hide that."""
        if jwk.get("kty") != KTY_AKP:
            raise error(f"{what}: kty must be {KTY_AKP!r}")
        if jwk.get("alg") != ALG_ML_DSA_65:
            raise error(f"{what}: alg must be {ALG_ML_DSA_65!r}, got {str(jwk.get('alg'))[:40]!r}")
        if "priv" in jwk:
            raise error(f"{what}: carries private key material ('priv'); refused")
        pub = jwk.get("pub")
        if not isinstance(pub, str) or len(pub) > PUBLIC_KEY_LEN * 2:
            raise error(f"{what}: 'pub' must be a base64url string")
        raw = b64url_decode(pub, what=f"{what}: 'pub'", error=error)
        if len(raw) != PUBLIC_KEY_LEN:
            raise error(f"{what}: 'pub' is {len(raw)} bytes; an ML-DSA-65 public key is {PUBLIC_KEY_LEN}")
        return cls(MLDSA65PublicKey(raw))
