"""Property tests: the hybrid JWT-SVID parsers and validator raise only spire-pqc errors, in time.

Each strategy starts from a valid hybrid token or PQC JWT bundle and changes it (header members,
claims, segments, bytes, JSON shapes), so examples reach the deep checks rather than the first
length test. The deadline of PROPERTY bounds each example.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from spire_pqc.errors import SpirePqcError
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.hybrid import HybridJwtSvid, validate
from spire_pqc.jwtsvid.jws import CompactJws, b64url_encode
from tests.unit.credentials.fuzz import PROPERTY
from tests.unit.jwtsvid.pki import Domain

DOMAIN = Domain.generate()
VALID = DOMAIN.hybrid(ttl=3600)
KWARGS = DOMAIN.validation_kwargs()
BUNDLE = PqcJwtBundle.from_signers(DOMAIN.td, [DOMAIN.signer]).to_jwks()

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _decode(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@st.composite
def _mutated_segment(draw: st.DrawFn, segment: str, members: list[str], specials: list[Any]) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(["", "=", "a", segment + "=", segment[:-1], "!" + segment, "e30"]))
    value = _decode(segment)
    for member in draw(st.lists(st.sampled_from(members), max_size=3)):
        value[member] = draw(_JSON | st.sampled_from(specials))
    raw = json.dumps(value).encode()
    if draw(st.integers(0, 5)) == 0:
        raw = draw(
            st.sampled_from([b"[]", b"1", b'{"a":1,"a":2}', b'{"exp": NaN}', b"\xff", b"[" * 40 + b"]" * 40])
        )
    return b64url_encode(raw)


@st.composite
def _tokens(draw: st.DrawFn) -> HybridJwtSvid:
    parts = {"classical": VALID.classical.split("."), "pqc": VALID.pqc.split(".")}
    specials = [
        "none",
        "HS256",
        "ES256",
        "ML-DSA-65",
        "JWT",
        str(DOMAIN.td),
        "spiffe://example.org/me",
        2**70,
    ]
    for name in draw(st.lists(st.sampled_from(["classical", "pqc"]), max_size=2, unique=True)):
        head, payload, signature = parts[name]
        which = draw(st.sampled_from(["header", "payload", "signature", "shape"]))
        if which == "header":
            head = draw(_mutated_segment(head, ["alg", "kid", "typ", "crit", "jwk", "spqc_cth"], specials))
        elif which == "payload":
            payload = draw(_mutated_segment(payload, ["sub", "aud", "exp", "nbf", "iat"], specials))
        elif which == "signature":
            signature = draw(st.sampled_from(["", "AA", signature[:-4], signature[4:], signature + "AAAA"]))
        parts[name] = [head, payload, signature]
        if which == "shape":
            parts[name] = draw(st.sampled_from([[head, payload], [head, payload, signature, ""], [head]]))
    return HybridJwtSvid(".".join(parts["classical"]), ".".join(parts["pqc"]))


@PROPERTY
@given(_tokens(), st.sampled_from(["a", "b"]))
def test_validate_raises_only_spire_pqc_errors(token: HybridJwtSvid, audience: str) -> None:
    try:
        verified = validate(token, audience, **KWARGS)
    except SpirePqcError:
        return
    # Only the genuine pair validates (a header-only change always breaks a signature or a binding).
    assert token == VALID and audience == "a"
    assert verified.spiffe_id.path == "/me"


@PROPERTY
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_compact_parsing_of_arbitrary_text_raises_only_spire_pqc_errors(text: str) -> None:
    with contextlib.suppress(SpirePqcError):
        CompactJws.parse(text, what="token")


@st.composite
def _bundles(draw: st.DrawFn) -> bytes:
    document = json.loads(BUNDLE)
    entry = document["keys"][0]
    pub, x5c = entry["pub"], entry["x5c"]
    for member in draw(
        st.lists(st.sampled_from(["kty", "alg", "pub", "kid", "use", "x5c", "priv"]), max_size=2)
    ):
        entry[member] = draw(
            _JSON | st.sampled_from(["AKP", "ML-DSA-65", "jwt-svid", pub[:-4], [x5c[0][:-8]], ["!"]])
        )
    if draw(st.booleans()):
        document["keys"].append(draw(st.sampled_from([entry, {"use": "jwt-svid", "kty": "AKP"}, 1, []])))
    raw = json.dumps(document).encode()
    return draw(st.sampled_from([raw, raw[:-1], raw + b"x", b'{"keys": 1}', b"null"]))


@PROPERTY
@given(_bundles())
def test_pqc_jwt_bundle_parsing_raises_only_spire_pqc_errors(data: bytes) -> None:
    try:
        bundle = PqcJwtBundle.parse(DOMAIN.td, data)
    except SpirePqcError:
        return
    assert len(bundle) <= 2


@PROPERTY
@given(_JSON.map(lambda v: json.dumps({"payload": "e30", "signatures": v})) | st.text(max_size=100))
def test_json_serialization_parsing_raises_only_spire_pqc_errors(text: str) -> None:
    with contextlib.suppress(SpirePqcError):
        HybridJwtSvid.from_json(text)
