"""ML-DSA-65 JOSE against independent implementations (issue 15).

* **jwcrypto** (PyPI, RFC 9964 support since 1.6): its own JWS serialization, AKP JWK parsing and
  thumbprints, over cryptography's ML-DSA. It verifies the PQC part we make, and we verify what it
  signs; both signatures of the hybrid token's JWS JSON General Serialization verify in it.
* **dilithium-py** (a pure-Python FIPS 204 implementation, no OpenSSL): verifies the raw signature
  bytes over the RFC 7515 §5.1 signing input, rebuilt here from the decoded header and payload, with
  the empty context RFC 9964 §5 requires. That shows the signing input, the context and the
  signature encoding are the standard ones, independently of OpenSSL.
"""

from __future__ import annotations

import base64
import json

import pytest
from dilithium_py.ml_dsa import ML_DSA_65
from jwcrypto import jwk, jws

from spire_pqc.crypto.mldsa import MLDSA65PublicKey
from spire_pqc.errors import BundleError
from spire_pqc.jwtsvid.bundle import PqcJwtKey
from spire_pqc.jwtsvid.jws import AkpPublicJwk, CompactJws, b64url_encode, verify_mldsa
from tests.unit.jwtsvid.pki import Domain


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.generate()


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _jwcrypto_key(entry: dict[str, object]) -> jwk.JWK:
    # The key members only: jwcrypto refuses to verify with a key whose "use" is not "sig", and a
    # SPIFFE bundle entry's use is "jwt-svid".
    return jwk.JWK(**{name: value for name, value in entry.items() if name not in ("use", "kid", "x5c")})


def test_jwcrypto_verifies_our_pqc_part_with_the_bundle_key(domain: Domain) -> None:
    token = domain.hybrid()
    entry = PqcJwtKey.from_signer(domain.signer).entry()
    verifier = jws.JWS()
    verifier.deserialize(token.pqc)
    verifier.verify(_jwcrypto_key(entry), alg="ML-DSA-65")
    assert verifier.payload == _b64url_decode(token.classical.split(".")[1])


def test_our_thumbprint_is_jwcryptos(domain: Domain) -> None:
    entry = PqcJwtKey.from_signer(domain.signer).entry()
    assert _jwcrypto_key(entry).thumbprint() == entry["kid"]


def test_we_verify_what_jwcrypto_signs() -> None:
    key = jwk.JWK.generate(kty="AKP", alg="ML-DSA-65")
    signer = jws.JWS(b'{"sub":"spiffe://example.org/me"}')
    signer.add_signature(
        key, alg="ML-DSA-65", protected=json.dumps({"alg": "ML-DSA-65", "kid": key.thumbprint()})
    )
    token = signer.serialize(compact=True)
    public = AkpPublicJwk.from_json(key.export_public(as_dict=True), what="jwcrypto key", error=BundleError)
    assert public.thumbprint() == key.thumbprint()
    verify_mldsa(CompactJws.parse(token, what="jwcrypto token"), public.key)


def test_both_signatures_of_the_json_serialization_verify_in_jwcrypto(domain: Domain) -> None:
    token = domain.hybrid()
    classical = _jwcrypto_key(domain.classical_key.public_jwk())
    pqc = _jwcrypto_key(PqcJwtKey.from_signer(domain.signer).entry())
    for key, alg in ((classical, "ES256"), (pqc, "ML-DSA-65")):
        reader = jws.JWS()
        reader.deserialize(token.to_json())
        reader.verify(key, alg=alg)


def test_dilithium_py_verifies_the_signature_over_the_rfc7515_signing_input(domain: Domain) -> None:
    token = domain.hybrid()
    header_segment, payload_segment, signature_segment = token.pqc.split(".")
    header = json.loads(_b64url_decode(header_segment))
    payload = _b64url_decode(payload_segment)
    # RFC 7515 §5.1: ASCII(BASE64URL(UTF8(JWS Protected Header)) || '.' || BASE64URL(JWS Payload)),
    # rebuilt from the decoded parts rather than copied from the token.
    header_json = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    signing_input = f"{b64url_encode(header_json)}.{b64url_encode(payload)}".encode("ascii")
    assert signing_input == f"{header_segment}.{payload_segment}".encode()
    public = domain.signer.key.public_key().raw()
    signature = _b64url_decode(signature_segment)
    assert ML_DSA_65.verify(public, signing_input, signature, ctx=b"")
    # A non-empty context (what a project-internal signature would use) does not verify: RFC 9964's
    # empty context is what the signature was made with.
    assert not ML_DSA_65.verify(public, signing_input, signature, ctx=b"spire-pqc")


def test_a_dilithium_py_signature_verifies_here() -> None:
    public, secret = ML_DSA_65.keygen()
    header = b64url_encode(b'{"alg":"ML-DSA-65"}')
    payload = b64url_encode(b'{"sub":"spiffe://example.org/me"}')
    signature = ML_DSA_65.sign(secret, f"{header}.{payload}".encode(), ctx=b"")
    token = f"{header}.{payload}.{b64url_encode(signature)}"
    verify_mldsa(CompactJws.parse(token, what="dilithium-py token"), MLDSA65PublicKey(public))
