"""JWT-SVID validation: accepted algorithms and bundle handling (spire_pqc.agent.jwtsvid)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes, validate
from spire_pqc.errors import MalformedCredentialError, VerificationError
from spire_pqc.spiffeid import SpiffeId, TrustDomain

ME = SpiffeId.parse("spiffe://example.org/me")
TD = TrustDomain.parse("example.org")


def _claims() -> dict[str, Any]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    return {"sub": str(ME), "aud": ["a"], "iat": now, "exp": now + 60}


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES384"])
def test_other_asymmetric_algorithms_verify(alg: str) -> None:
    key: Any = (
        ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else rsa.generate_private_key(65537, 2048)
    )
    algorithm = jwt.algorithms.get_default_algorithms()[alg]
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="jwt-svid")
    token = jwt.encode(_claims(), key, algorithm=alg, headers={"kid": "k1"})
    spiffe_id, claims = validate(token, "a", {TD: jwks_bytes([jwk])})
    assert spiffe_id == ME and claims["aud"] == ["a"]


def test_keys_for_x509_svids_are_not_jwt_keys() -> None:
    key = JwtSigningKey.generate()
    jwk = key.public_jwk() | {"use": "x509-svid"}
    token = key.sign(ME, ["a"], dt.timedelta(minutes=1))
    with pytest.raises(VerificationError, match="not found"):
        validate(token, "a", {TD: jwks_bytes([jwk])})
    assert validate(token, "a", {TD: jwks_bytes([key.public_jwk()])})[0] == ME


def test_a_token_of_another_trust_domain_needs_its_bundle() -> None:
    key = JwtSigningKey.generate()
    other = SpiffeId.parse("spiffe://other.org/me")
    token = key.sign(other, ["a"], dt.timedelta(minutes=1))
    with pytest.raises(VerificationError, match=r"no JWT bundle for trust domain other\.org"):
        validate(token, "a", {TD: jwks_bytes([key.public_jwk()])})


def test_a_key_of_the_wrong_type_for_the_algorithm_is_rejected() -> None:
    ec_key = JwtSigningKey.generate()
    rsa_key = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": ec_key.kid})
    with pytest.raises(VerificationError, match="cannot verify a RS256 token"):
        validate(token, "a", {TD: jwks_bytes([ec_key.public_jwk()])})


def _with_header(token: str, **header: Any) -> str:
    """``token`` with its JWS header replaced (the signature no longer matters: parsing comes first)."""
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([encoded, *token.split(".")[1:]])


@pytest.mark.parametrize("alg", [["ES256"], {"ES256": 1}, 256, None])
def test_an_algorithm_that_is_not_a_string_is_refused(alg: object) -> None:
    """Regression (issue 9): an unhashable "alg" raised TypeError out of validate()."""
    key = JwtSigningKey.generate()
    token = _with_header(key.sign(ME, ["a"], dt.timedelta(minutes=1)), alg=alg, kid=key.kid)
    with pytest.raises(VerificationError, match="unsupported token signature algorithm"):
        validate(token, "a", {TD: jwks_bytes([key.public_jwk()])})


@pytest.mark.parametrize(
    "bundle",
    [b'{"keys": 5}', b'{"keys": {"kid": "x"}}', b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"],
    ids=["keys-int", "keys-object", "not-an-object", "deeply-nested", "not-utf8"],
)
def test_a_malformed_jwt_bundle_is_a_typed_error(bundle: bytes) -> None:
    """Regression (issue 9): {"keys": 5} raised TypeError and deep nesting RecursionError."""
    key = JwtSigningKey.generate()
    token = key.sign(ME, ["a"], dt.timedelta(minutes=1))
    with pytest.raises(MalformedCredentialError, match=r"JWT bundle of example\.org"):
        validate(token, "a", {TD: bundle})
