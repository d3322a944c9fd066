"""JWT-SVID validation: accepted algorithms and bundle handling (spire_pqc.agent.jwtsvid)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes, validate
from spire_pqc.errors import VerificationError
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
