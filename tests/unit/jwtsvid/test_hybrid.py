"""Hybrid JWT-SVIDs: each refusal the wire format promises, one test each (spire_pqc.jwtsvid.hybrid)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest

from spire_pqc.crypto.mldsa import MLDSA65PrivateKey
from spire_pqc.errors import (
    ChainError,
    IdentityMismatchError,
    KeyUsageError,
    LeafError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenBindingError,
    TokenExpiredError,
    TokenKeyError,
    TokenMalformedError,
    TokenSignatureError,
    VerificationError,
)
from spire_pqc.jwtsvid.bundle import PqcJwtBundle, PqcJwtKey
from spire_pqc.jwtsvid.hybrid import BINDING_HEADER, HybridJwtSvid, binding_of, sign_pqc_part, validate
from spire_pqc.jwtsvid.jws import AkpPublicJwk, b64url_encode, sign_compact
from spire_pqc.spiffeid import SpiffeId
from spire_pqc.x509 import certs
from spire_pqc.x509.signer import TrustDomainSigner
from tests.unit.jwtsvid.pki import Domain


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.generate()


def _segments(token: str) -> list[str]:
    return token.split(".")


def _decode(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _with_header(token: str, **changes: Any) -> str:
    """The token with header members changed (None deletes one); the signature is kept."""
    head, payload, signature = _segments(token)
    header = _decode(head)
    for name, value in changes.items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    return ".".join([b64url_encode(json.dumps(header).encode()), payload, signature])


def test_a_valid_hybrid_token_validates_with_the_claims_both_parts_sign(domain: Domain) -> None:
    token = domain.hybrid(audience=("a", "b"))
    verified = validate(token, "b", **domain.validation_kwargs())
    assert verified.spiffe_id == SpiffeId.parse("spiffe://example.org/me")
    assert verified.claims == _decode(_segments(token.classical)[1])
    # The PQC part carries the classical payload segment byte for byte, and binds the whole token.
    assert _segments(token.pqc)[1] == _segments(token.classical)[1]
    header = _decode(_segments(token.pqc)[0])
    assert header == {
        "alg": "ML-DSA-65",
        "kid": AkpPublicJwk(domain.signer.key.public_key()).thumbprint(),
        "typ": "JWT",
        BINDING_HEADER: b64url_encode(hashlib.sha256(token.classical.encode()).digest()),
    }


def test_wrong_audience_is_refused(domain: Domain) -> None:
    with pytest.raises(TokenAudienceError, match="not in the token's 'aud'"):
        validate(domain.hybrid(), "other", **domain.validation_kwargs())


def test_an_expired_token_is_refused(domain: Domain) -> None:
    token = domain.hybrid(ttl=60)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    with pytest.raises(TokenExpiredError):
        validate(token, "a", now=later, **domain.validation_kwargs())


def test_a_missing_pqc_part_is_refused(domain: Domain) -> None:
    with pytest.raises(TokenBindingError, match="missing"):
        validate(HybridJwtSvid(domain.classical(), ""), "a", **domain.validation_kwargs())


def test_a_missing_classical_part_is_refused(domain: Domain) -> None:
    token = domain.hybrid()
    with pytest.raises(TokenMalformedError):
        validate(HybridJwtSvid("", token.pqc), "a", **domain.validation_kwargs())


def _flip_signature(token: str) -> str:
    head, payload, signature = _segments(token)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return ".".join([head, payload, b64url_encode(bytes(raw))])


def test_an_invalid_pqc_signature_is_refused(domain: Domain) -> None:
    token = domain.hybrid()
    with pytest.raises(TokenSignatureError, match="ML-DSA-65"):
        validate(
            HybridJwtSvid(token.classical, _flip_signature(token.pqc)), "a", **domain.validation_kwargs()
        )


def test_an_invalid_classical_signature_is_refused(domain: Domain) -> None:
    token = domain.hybrid()
    bad = _flip_signature(token.classical)
    # Re-bind the PQC part to the broken classical token, so only the classical signature is wrong.
    pqc = sign_compact(
        {**_decode(_segments(token.pqc)[0]), BINDING_HEADER: binding_of(bad)},
        _segments(bad)[1],
        domain.signer.key,
    )
    with pytest.raises(TokenSignatureError, match="classical"):
        validate(HybridJwtSvid(bad, pqc), "a", **domain.validation_kwargs())


def test_a_classical_token_with_another_tokens_pqc_part_is_refused(domain: Domain) -> None:
    first = domain.hybrid(ttl=300)
    second = domain.hybrid(ttl=301)  # other claims (exp)
    with pytest.raises(TokenBindingError):
        validate(HybridJwtSvid(first.classical, second.pqc), "a", **domain.validation_kwargs())


def test_a_pqc_part_over_the_same_claims_for_another_classical_signature_is_refused(domain: Domain) -> None:
    # Same header and claims, a new ECDSA signature (ECDSA is randomised): a different classical token.
    token = domain.hybrid()
    head, payload, _ = _segments(token.classical)
    key = domain.classical_key.key
    import jwt

    resigned = jwt.api_jws.PyJWS().encode(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)), key, algorithm="ES256",
        headers=_decode(head),
    )  # fmt: skip
    assert resigned != token.classical
    with pytest.raises(TokenBindingError, match="another classical token"):
        validate(HybridJwtSvid(resigned, token.pqc), "a", **domain.validation_kwargs())


def test_a_pqc_key_not_in_the_bundle_is_refused(domain: Domain) -> None:
    other = TrustDomainSigner.issue(
        domain.hierarchy.intermediate.certificate, domain.hierarchy.intermediate.key, domain.td.name,
        ttl=dt.timedelta(hours=1),
    )  # fmt: skip
    classical = domain.classical()
    token = sign_pqc_part(classical, other, trust_domain=domain.td, jwt_bundles=domain.jwt_bundles())
    with pytest.raises(TokenKeyError, match="not in the PQC JWT bundle"):
        validate(token, "a", **domain.validation_kwargs())
    # ... and accepted once the bundle lists it (rotation: the next signer is published).
    bundles = {domain.td: PqcJwtBundle.from_signers(domain.td, [domain.signer, other])}
    assert validate(token, "a", **domain.validation_kwargs(bundles)).claims


def test_a_key_injected_into_the_bundle_without_a_trusted_chain_is_refused(domain: Domain) -> None:
    rogue_domain = Domain.generate(domain.td.name)  # same trust domain name, another PQC root
    token = sign_pqc_part(
        domain.classical(), rogue_domain.signer, trust_domain=domain.td, jwt_bundles=domain.jwt_bundles()
    )
    bundles = {domain.td: PqcJwtBundle.from_signers(domain.td, [domain.signer, rogue_domain.signer])}
    with pytest.raises(ChainError):
        validate(token, "a", **domain.validation_kwargs(bundles))


def test_a_workload_pqc_svid_cannot_sign_jwt_svids(domain: Domain) -> None:
    inter = domain.hierarchy.intermediate
    workload_key = MLDSA65PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    svid = certs.build_pqc_svid(
        inter.certificate, inter.key, workload_key.public_key(), "spiffe://example.org/me",
        trust_domain="example.org", classical_leaf_der=b"x", not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(hours=1),
    )  # fmt: skip
    impostor = TrustDomainSigner(workload_key, (svid, inter.certificate))
    token = sign_pqc_part(
        domain.classical(), impostor, trust_domain=domain.td, jwt_bundles=domain.jwt_bundles()
    )
    bundles = {domain.td: PqcJwtBundle(domain.td, [PqcJwtKey.from_signer(impostor)])}
    with pytest.raises((KeyUsageError, LeafError)):
        validate(token, "a", **domain.validation_kwargs(bundles))


def _forge(header: dict[str, Any], payload: str, signature: bytes = b"\x00" * 64) -> str:
    return ".".join([b64url_encode(json.dumps(header).encode()), payload, b64url_encode(signature)])


@pytest.mark.parametrize("alg", ["none", "HS256", "ML-DSA-65", "ML-DSA-44", "EdDSA", None, 7])
def test_alg_confusion_in_the_classical_part_is_refused(domain: Domain, alg: Any) -> None:
    token = domain.hybrid()
    head, payload, _ = _segments(token.classical)
    header = {**_decode(head), "alg": alg}
    if alg == "HS256":  # the classic attack: HMAC keyed with the public key bytes
        classical = _forge(header, payload)
        mac = hmac.new(
            json.dumps(domain.classical_key.public_jwk()).encode(),
            classical.rsplit(".", 1)[0].encode(),
            "sha256",
        )
        classical = classical.rsplit(".", 1)[0] + "." + b64url_encode(mac.digest())
    else:
        classical = _forge(header, payload)
    pqc = sign_compact(
        {**_decode(_segments(token.pqc)[0]), BINDING_HEADER: binding_of(classical)},
        payload,
        domain.signer.key,
    )
    with pytest.raises(TokenAlgorithmError):
        validate(HybridJwtSvid(classical, pqc), "a", **domain.validation_kwargs())


@pytest.mark.parametrize(
    "alg", ["none", "HS256", "ES256", "RS256", "ML-DSA-44", "ML-DSA-87", "ml-dsa-65", None]
)
def test_alg_confusion_in_the_pqc_part_is_refused(domain: Domain, alg: Any) -> None:
    token = domain.hybrid()
    forged = _with_header(token.pqc, alg=alg)
    with pytest.raises(TokenAlgorithmError):
        validate(HybridJwtSvid(token.classical, forged), "a", **domain.validation_kwargs())


@pytest.mark.parametrize("member", ["jwk", "jku", "x5c", "x5u", "crit"])
def test_headers_that_embed_or_point_at_keys_are_refused(domain: Domain, member: str) -> None:
    token = domain.hybrid()
    forged = _with_header(token.pqc, **{member: ["x"]})
    with pytest.raises(TokenAlgorithmError, match=member):
        validate(HybridJwtSvid(token.classical, forged), "a", **domain.validation_kwargs())


def test_a_changed_pqc_header_breaks_its_signature(domain: Domain) -> None:
    token = domain.hybrid()
    with pytest.raises(TokenSignatureError):
        validate(
            HybridJwtSvid(token.classical, _with_header(token.pqc, typ=None)),
            "a",
            **domain.validation_kwargs(),
        )


def test_another_trust_domains_signer_cannot_sign_for_this_one(domain: Domain) -> None:
    other = Domain.generate("other.org")
    token = sign_pqc_part(
        domain.classical(), other.signer, trust_domain=domain.td, jwt_bundles=domain.jwt_bundles()
    )
    kwargs = domain.validation_kwargs()
    # Even when other.org's key is (wrongly) listed in example.org's bundle, its chain is not example.org's.
    kwargs["pqc_jwt_bundles"] = {
        domain.td: PqcJwtBundle.from_signers(domain.td, [domain.signer, other.signer])
    }
    with pytest.raises(VerificationError):
        validate(token, "a", **kwargs)


def test_the_signer_refuses_what_spire_did_not_sign(domain: Domain) -> None:
    other = Domain.generate("other.org")
    with pytest.raises(IdentityMismatchError):
        sign_pqc_part(
            other.classical(), domain.signer, trust_domain=domain.td, jwt_bundles=other.jwt_bundles()
        )
    with pytest.raises(TokenSignatureError):
        sign_pqc_part(_flip_signature(domain.classical()), domain.signer, trust_domain=domain.td,
                      jwt_bundles=domain.jwt_bundles())  # fmt: skip
    with pytest.raises(TokenExpiredError):
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        sign_pqc_part(
            domain.classical(ttl=1),
            domain.signer,
            trust_domain=domain.td,
            jwt_bundles=domain.jwt_bundles(),
            now=later,
        )
    with pytest.raises(TokenAlgorithmError):
        sign_pqc_part(_with_header(domain.classical(), alg="none"), domain.signer, trust_domain=domain.td,
                      jwt_bundles=domain.jwt_bundles())  # fmt: skip


def test_the_json_serialization_round_trips(domain: Domain) -> None:
    token = domain.hybrid()
    text = token.to_json()
    doc = json.loads(text)
    assert len(doc["signatures"]) == 2 and doc["payload"] == _segments(token.classical)[1]
    assert HybridJwtSvid.from_json(text) == token
    with pytest.raises(TokenMalformedError):
        HybridJwtSvid.from_json(json.dumps({**doc, "signatures": doc["signatures"][:1]}))


def test_the_signer_certificate_follows_its_intermediate(domain: Domain) -> None:
    inter = domain.hierarchy.intermediate
    long_lived = TrustDomainSigner.issue(
        inter.certificate, inter.key, domain.td.name, ttl=dt.timedelta(days=10_000)
    )
    assert long_lived.not_after <= inter.certificate.not_valid_after_utc
