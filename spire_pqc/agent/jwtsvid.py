"""JWT-SVIDs: dev signing, JWKS bundles and validation (``spiffe/spiffe:standards/JWT-SVID.md``).

A JWT-SVID is a JWS compact token whose ``sub`` is the SPIFFE ID, ``aud`` the audiences, with ``exp``
and a header ``kid`` naming the key in the trust domain's JWT bundle (a JWK Set whose keys have
``use = jwt-svid``). Validation (:func:`validate`, from :mod:`spire_pqc.jwtsvid.classical`) is shared by every identity
source: it needs only the JWT bundles.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spire_pqc.agent.model import Caller

# Validation is shared with the hybrid (post-quantum) JWT-SVID, so it lives below the agent.
from spire_pqc.jwtsvid.classical import ALLOWED_ALGORITHMS, validate
from spire_pqc.spiffeid import SpiffeId, TrustDomain

DEFAULT_JWT_TTL = dt.timedelta(minutes=5)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_JWT_TTL",
    "JwtProfile",
    "JwtSigningKey",
    "JwtSvid",
    "jwks_bytes",
    "validate",
]


@dataclass(frozen=True)
class JwtSvid:
    """One JWT-SVID as served by FetchJWTSVID."""

    spiffe_id: SpiffeId
    token: str = field(repr=False)
    hint: str = ""


@runtime_checkable
class JwtProfile(Protocol):
    """What an identity source implements to serve the Workload API's JWT profile.

    ``fetch_jwt_svids`` raises AuthorizationError when the caller has no identity (or not
    ``spiffe_id``); ``watch_jwt_bundles`` yields trust domain → JWKS JSON, full state each time.
    """

    async def fetch_jwt_svids(
        self, caller: Caller, audience: Sequence[str], spiffe_id: SpiffeId | None
    ) -> list[JwtSvid]: ...

    def watch_jwt_bundles(self, caller: Caller) -> AsyncIterator[Mapping[TrustDomain, bytes]]: ...

    def jwt_bundles(self) -> Mapping[TrustDomain, bytes]: ...


@dataclass(frozen=True)
class JwtSigningKey:
    """A dev JWT signing key (ES256 on P-256) with its key ID."""

    kid: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> JwtSigningKey:
        return cls.from_key(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_key(cls, key: ec.EllipticCurvePrivateKey) -> JwtSigningKey:
        """The key with a ``kid`` derived from its public key, so a kept key keeps its kid."""
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()[:18]).decode()
        return cls(kid, key)

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=self.kid, use="jwt-svid")
        return jwk

    def sign(
        self, spiffe_id: SpiffeId, audience: Sequence[str], ttl: dt.timedelta, now: dt.datetime | None = None
    ) -> str:
        issued = now or dt.datetime.now(dt.UTC)
        claims = {
            "sub": str(spiffe_id),
            "aud": list(audience),
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})


def jwks_bytes(keys: Sequence[Mapping[str, Any]]) -> bytes:
    """A SPIFFE JWT bundle: a JWK Set of ``jwt-svid`` keys (Trust Domain and Bundle §4)."""
    return json.dumps({"keys": [dict(k) for k in keys]}, sort_keys=True).encode()
