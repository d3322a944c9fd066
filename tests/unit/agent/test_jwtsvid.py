"""JWT-SVID validation: accepted algorithms and bundle handling (spire_pqc.agent.jwtsvid)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.agent.jwtsvid import JwtSigningKey, jwks_bytes, validate
from spire_pqc.errors import MalformedCredentialError, SpirePqcError, VerificationError
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from tests.unit.credentials.fuzz import PROPERTY

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


# --- property: validate() raises only spire-pqc errors -----------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_SIGNER = JwtSigningKey.generate()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def _tokens_and_bundles(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid token and bundle with header members, claims or bundle entries replaced."""
    valid = _SIGNER.sign(ME, ["a"], dt.timedelta(minutes=5))
    header_b64, payload_b64, signature = valid.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    for member in draw(st.lists(st.sampled_from(["alg", "kid", "typ", "crit", "jku"]), max_size=2)):
        header[member] = draw(_JSON | st.sampled_from(["ES256", "none", "HS256", _SIGNER.kid]))
    for claim in draw(st.lists(st.sampled_from(["sub", "aud", "exp", "iat", "nbf"]), max_size=2)):
        claims[claim] = draw(_JSON | st.sampled_from([str(ME), "a", ["a"], 1e300, 2**70, float("inf")]))
    raw_claims = json.dumps(claims).encode()
    if draw(st.booleans()):
        raw_claims = draw(st.sampled_from([b"[]", b"1", b'{"exp": NaN}', b"\xff", b'{"sub": {"$": 1}}']))
    token = ".".join([_b64(json.dumps(header).encode()), _b64(raw_claims), signature])
    entry = _SIGNER.public_jwk()
    for member in draw(st.lists(st.sampled_from(["kty", "crv", "x", "y", "use", "kid"]), max_size=2)):
        entry[member] = draw(_JSON | st.sampled_from(["EC", "RSA", "oct", "P-384", _SIGNER.kid]))
    bundle = draw(
        st.sampled_from([jwks_bytes([entry]), jwks_bytes([entry, {"kid": _SIGNER.kid}])])
        | _JSON.map(lambda v: json.dumps({"keys": v}).encode())
        | st.binary(max_size=40)
    )
    return draw(st.sampled_from([token, valid, token[:-3], token + "."])), bundle


@PROPERTY
@given(_tokens_and_bundles(), st.sampled_from(["a", "b"]))
def test_validate_raises_only_spire_pqc_errors(case: tuple[str, bytes], audience: str) -> None:
    token, bundle = case
    try:
        spiffe_id, claims = validate(token, audience, {TD: bundle})
    except SpirePqcError:
        return
    assert spiffe_id == ME  # only the genuine signature verifies
    assert claims["sub"] == str(ME)


def test_a_bundle_key_missing_its_members_is_a_malformed_credential() -> None:
    """Found by the property above: PyJWT raised KeyError('k') for an "oct" entry without "k"."""
    token = _SIGNER.sign(ME, ["a"], dt.timedelta(minutes=5))
    for entry in ({"kty": "oct", "kid": _SIGNER.kid}, {"kty": "EC", "crv": "P-256", "kid": _SIGNER.kid}):
        with pytest.raises(SpirePqcError):
            validate(token, "a", {TD: jwks_bytes([entry])})
