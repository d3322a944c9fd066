"""JWT-SVIDs: dev signing, JWKS bundles and validation (reference/workload-api-and-peers.md §1, JWT-SVID profile).

A JWT-SVID is a JWS compact token whose ``sub`` is the SPIFFE ID, ``aud`` the audiences, with ``exp``
and a header ``kid`` naming the key in the trust domain's JWT bundle (a JWK Set whose keys have
``use = jwt-svid``). Validation is shared by every identity source: it needs only the JWT bundles.
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
from spire_pqc.errors import MalformedCredentialError, SpiffeIdError, VerificationError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

# Asymmetric algorithms only: "none" and HMAC (HS*) would let anyone who knows the bundle forge
# tokens (JWT-SVID §3 requires an asymmetric signature).
ALLOWED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
DEFAULT_JWT_TTL = dt.timedelta(minutes=5)


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


def _key_for(bundle: bytes, kid: str, td: TrustDomain) -> Any:
    try:
        document = json.loads(bundle)
    except RecursionError:
        raise MalformedCredentialError(f"JWT bundle of {td} does not parse: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedCredentialError(f"JWT bundle of {td} does not parse: {exc}") from exc
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise MalformedCredentialError(f"JWT bundle of {td} is not a JWK Set (no 'keys' array)")
    for entry in keys:
        # Entries with another use (x509-svid) are not JWT keys (Trust Domain and Bundle §4).
        if isinstance(entry, dict) and entry.get("kid") == kid and entry.get("use", "jwt-svid") == "jwt-svid":
            try:
                return jwt.PyJWK.from_dict(entry).key
            except jwt.PyJWTError as exc:
                raise MalformedCredentialError(f"JWT bundle key {kid!r} of {td} is unusable: {exc}") from exc
    raise VerificationError(f"key {kid!r} not found in the JWT bundle of {td}")


def validate(
    token: str, audience: str, bundles: Mapping[TrustDomain, bytes]
) -> tuple[SpiffeId, dict[str, Any]]:
    """Verify a JWT-SVID for ``audience``; return its SPIFFE ID and claims.

    Raises VerificationError (reason in the message) for anything invalid: malformed token,
    disallowed algorithm, unknown trust domain or key, bad signature, expired, audience not in ``aud``.
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise MalformedCredentialError(f"token is malformed: {exc}") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise VerificationError(f"unsupported token signature algorithm {str(alg)[:40]!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise VerificationError("token header has no key ID")
    try:
        spiffe_id = SpiffeId.parse(str(unverified.get("sub", "")))
    except SpiffeIdError as exc:
        raise VerificationError(f"token subject is not a SPIFFE ID: {exc}") from exc
    td = spiffe_id.trust_domain
    bundle = bundles.get(td)
    if bundle is None:
        raise VerificationError(f"no JWT bundle for trust domain {td}")
    key = _key_for(bundle, kid, td)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            options={"require": ["sub", "aud", "exp"]},
        )
    except jwt.PyJWTError as exc:
        raise VerificationError(f"token is invalid: {exc}") from exc
    except (TypeError, ValueError) as exc:  # PyJWT's way of saying the key does not fit the algorithm
        raise VerificationError(f"key {kid!r} cannot verify a {alg} token: {exc}") from exc
    return spiffe_id, claims
