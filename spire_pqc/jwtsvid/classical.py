"""The classical JWT-SVID: validation against a trust domain's JWT bundle (JWT-SVID §3, §6).

A JWT-SVID is a JWS compact token whose ``sub`` is the SPIFFE ID, ``aud`` the audiences, with ``exp``
and a header ``kid`` naming the key in the trust domain's JWT bundle (a JWK Set whose keys have
``use = jwt-svid``). Only asymmetric classical algorithms are accepted: ``none`` and HMAC would let
anyone who knows the bundle forge tokens, and ML-DSA belongs to the PQC part of a hybrid token
(:mod:`spire_pqc.jwtsvid.hybrid`), never here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spire_pqc.errors import (
    MalformedCredentialError,
    SpiffeIdError,
    TokenAlgorithmError,
    TokenKeyError,
    TokenSignatureError,
    VerificationError,
)
from spire_pqc.spiffeid import SpiffeId, TrustDomain

ALLOWED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)


def key_for(bundle: bytes, kid: str, td: TrustDomain) -> Any:
    """The public key ``kid`` of ``td``'s JWT bundle (a JWK Set), as PyJWT needs it."""
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
            # PyJWT indexes members without checking them: an "oct" key without "k" is a KeyError.
            except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
                raise MalformedCredentialError(f"JWT bundle key {kid!r} of {td} is unusable: {exc}") from exc
    raise TokenKeyError(f"key {kid!r} not found in the JWT bundle of {td}")


def jwks_from_public_keys(keys: Iterable[tuple[str, bytes]]) -> bytes:
    """A JWT bundle (JWK Set of ``jwt-svid`` keys) from ``(kid, SubjectPublicKeyInfo DER)`` pairs, the
    form SPIRE's plugin types carry. Keys of a type no JWT-SVID algorithm here uses are left out."""
    entries = []
    for kid, spki in keys:
        try:
            key = serialization.load_der_public_key(spki)
        except ValueError as exc:
            raise MalformedCredentialError(f"JWT key {kid[:60]!r} does not parse: {exc}") from None
        if isinstance(key, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
        elif isinstance(key, rsa.RSAPublicKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
        else:
            continue
        jwk.update(kid=kid, use="jwt-svid")
        entries.append(jwk)
    return json.dumps({"keys": entries}, sort_keys=True).encode()


def check_algorithm(alg: object, *, part: str = "classical part") -> str:
    """``alg`` if it is an asymmetric classical algorithm; TokenAlgorithmError otherwise."""
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise TokenAlgorithmError(f"{part}: unsupported token signature algorithm {str(alg)[:40]!r}")
    return alg


def verify_signature(
    token: str, spiffe_id: SpiffeId, header: Mapping[str, Any], bundles: Mapping[TrustDomain, bytes]
) -> None:
    """Check the classical signature of ``token`` by ``header['kid']`` in the JWT bundle of
    ``spiffe_id``'s trust domain. Claims are not checked here (the caller does, with its clock)."""
    alg = check_algorithm(header.get("alg"))
    kid = header.get("kid")
    sid = str(spiffe_id)
    if not isinstance(kid, str) or not kid:
        raise TokenKeyError("classical part: header has no key ID", spiffe_id=sid)
    td = spiffe_id.trust_domain
    bundle = bundles.get(td)
    if bundle is None:
        raise TokenKeyError(f"no JWT bundle for trust domain {td}", spiffe_id=sid)
    key = key_for(bundle, kid, td)
    try:
        jwt.PyJWS().decode_complete(token, key, algorithms=[alg])
    except jwt.InvalidSignatureError:
        raise TokenSignatureError("classical signature does not verify", spiffe_id=sid) from None
    except jwt.PyJWTError as exc:
        raise TokenSignatureError(f"classical part does not verify: {exc}", spiffe_id=sid) from None
    except (TypeError, ValueError) as exc:  # PyJWT's way of saying the key does not fit the algorithm
        raise TokenKeyError(f"key {kid!r} cannot verify a {alg} token: {exc}", spiffe_id=sid) from None


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
    alg = check_algorithm(header.get("alg"), part="token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenKeyError("token header has no key ID")
    try:
        spiffe_id = SpiffeId.parse(str(unverified.get("sub", "")))
    except SpiffeIdError as exc:
        raise VerificationError(f"token subject is not a SPIFFE ID: {exc}") from exc
    td = spiffe_id.trust_domain
    bundle = bundles.get(td)
    if bundle is None:
        raise TokenKeyError(f"no JWT bundle for trust domain {td}")
    key = key_for(bundle, kid, td)
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
