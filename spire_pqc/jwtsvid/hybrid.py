"""Hybrid JWT-SVIDs: SPIRE's classical token plus an ML-DSA-65 JWS over the same claims, bound to it.

Wire form (docs/pq-jwt.md has the rationale):

* **classical part** — the compact JWS exactly as SPIRE issued it (ES256/RS256/…); an unmodified
  JWT-SVID consumer takes this and nothing else;
* **PQC part** — a compact JWS whose payload segment is *byte for byte* the classical token's payload
  segment, with the protected header ``{"alg": "ML-DSA-65", "kid": <AKP thumbprint>, "typ": "JWT",
  "spqc_cth": BASE64URL(SHA-256(ASCII(classical token)))}``, signed (empty FIPS 204 context, RFC 9964)
  by the trust domain's JWT-SVID signer, whose key is in the trust domain's PQC JWT bundle.

The two parts share one payload, so together they are one JWS with two signatures; the JWS JSON
General Serialization (RFC 7515 §7.2.1) of that pair is :meth:`HybridJwtSvid.to_json`. The PQC
header names the hash of the whole classical token, so a PQC part made for one classical token never
validates with another, and a classical token never validates with a PQC part made for another.

:func:`validate` refuses: wrong audience, expired, either signature missing or invalid, a PQC key not
in the bundle (or not certified by a trusted PQC root), ``alg`` confusion (``none``, HMAC, ML-DSA in
the classical part, a classical algorithm in the PQC part, embedded or remote keys), and a pair that
does not belong together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from spire_pqc._internal import strictjson
from spire_pqc.bundle import BundleSource
from spire_pqc.errors import (
    BundleError,
    IdentityMismatchError,
    SpiffeIdError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenBindingError,
    TokenExpiredError,
    TokenKeyError,
    TokenMalformedError,
)
from spire_pqc.jwtsvid import classical
from spire_pqc.jwtsvid.bundle import PqcJwtBundle
from spire_pqc.jwtsvid.jws import (
    ALG_ML_DSA_65,
    AkpPublicJwk,
    CompactJws,
    b64url_encode,
    sign_compact,
    verify_mldsa,
)
from spire_pqc.spiffeid import SpiffeId, TrustDomain
from spire_pqc.x509.signer import TrustDomainSigner

__all__ = [
    "BINDING_HEADER",
    "HybridJwtSvid",
    "VerifiedJwtSvid",
    "binding_of",
    "claimed_expiry",
    "sign_pqc_part",
    "validate",
]

#: Protected-header parameter of the PQC part: the hash of the classical token it belongs to.
BINDING_HEADER = "spqc_cth"
#: Upper bound on the claims (the shared payload) of a JWT-SVID.
MAX_CLAIMS_BYTES = 16 * 1024
# Header parameters that embed or point at a key. The key must come from the trust domain's bundle,
# never from the token itself (the classic JWT key-injection attacks), and ``crit`` names extensions
# we would have to understand; a header with any of them is refused.
_FORBIDDEN_HEADER = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64"})
_PQC_HEADER_ALLOWED = frozenset({"alg", "kid", "typ", BINDING_HEADER})


def binding_of(classical_token: str) -> str:
    """BASE64URL(SHA-256(ASCII(classical token))): the value of the PQC part's ``spqc_cth``."""
    return b64url_encode(hashlib.sha256(classical_token.encode("ascii")).digest())


@dataclass(frozen=True)
class HybridJwtSvid:
    """A hybrid JWT-SVID as carried: both compact tokens."""

    classical: str = field(repr=False)
    pqc: str = field(repr=False)

    def to_json(self) -> str:
        """The pair as one JWS JSON General Serialization with two signatures (RFC 7515 §7.2.1)."""
        c = CompactJws.parse(self.classical, what="classical part")
        p = CompactJws.parse(self.pqc, what="PQC part")
        if c.payload_segment != p.payload_segment:
            raise TokenBindingError("the two parts do not share one payload")
        signatures = [
            {"protected": j.header_segment, "signature": b64url_encode(j.signature)} for j in (c, p)
        ]
        return strictjson.dumps_compact({"payload": c.payload_segment, "signatures": signatures}).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> HybridJwtSvid:
        """The pair from its JWS JSON General Serialization (classical signature first)."""
        doc = strictjson.loads(
            text,
            what="hybrid JWT-SVID",
            max_bytes=2 * MAX_CLAIMS_BYTES + 64 * 1024,
            error=TokenMalformedError,
        )
        if not isinstance(doc, dict) or set(doc) != {"payload", "signatures"}:
            raise TokenMalformedError("hybrid JWT-SVID: expected exactly 'payload' and 'signatures'")
        payload, signatures = doc["payload"], doc["signatures"]
        if not isinstance(payload, str) or not isinstance(signatures, list) or len(signatures) != 2:
            raise TokenMalformedError("hybrid JWT-SVID: a payload string and exactly two signatures")
        tokens = []
        for index, item in enumerate(signatures):
            if not isinstance(item, dict) or set(item) != {"protected", "signature"}:
                raise TokenMalformedError(
                    f"hybrid JWT-SVID: signatures[{index}] must have 'protected' and 'signature'"
                )
            if not isinstance(item["protected"], str) or not isinstance(item["signature"], str):
                raise TokenMalformedError(f"hybrid JWT-SVID: signatures[{index}] members must be strings")
            tokens.append(f"{item['protected']}.{payload}.{item['signature']}")
        return cls(tokens[0], tokens[1])


@dataclass(frozen=True)
class VerifiedJwtSvid:
    """What :func:`validate` returns: the identity and the claims both signatures cover."""

    spiffe_id: SpiffeId
    claims: Mapping[str, Any]
    expiry: dt.datetime


def _claims(token: CompactJws, what: str) -> dict[str, Any]:
    payload = token.payload()
    claims = strictjson.loads(
        payload, what=f"{what}: claims", max_bytes=MAX_CLAIMS_BYTES, error=TokenMalformedError
    )
    if not isinstance(claims, dict):
        raise TokenMalformedError(f"{what}: claims are not a JSON object")
    return claims


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise TokenMalformedError("claims have no 'sub' string")
    try:
        spiffe_id = SpiffeId.parse(sub)
    except SpiffeIdError as exc:
        raise TokenMalformedError(f"'sub' is not a SPIFFE ID: {exc}") from None
    return spiffe_id


def _int_claim(claims: Mapping[str, Any], name: str, sid: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # JSON true is not a time; floats are allowed by RFC 7519 NumericDate but not by SPIRE: refuse.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
        raise TokenMalformedError(f"claim {name!r} must be an integer NumericDate", spiffe_id=sid)
    return value


def _check_claims(
    claims: Mapping[str, Any], spiffe_id: SpiffeId, audience: str, now: dt.datetime
) -> dt.datetime:
    sid = str(spiffe_id)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise TokenMalformedError(
            "claim 'aud' must be a string or a non-empty array of strings", spiffe_id=sid
        )
    exp = _int_claim(claims, "exp", sid, required=True)
    assert exp is not None  # required=True
    nbf = _int_claim(claims, "nbf", sid, required=False)
    stamp = now.timestamp()
    if stamp >= exp:
        raise TokenExpiredError(
            f"token expired at {dt.datetime.fromtimestamp(exp, dt.UTC).isoformat()}", spiffe_id=sid
        )
    if nbf is not None and stamp < nbf:
        raise TokenExpiredError("token is not valid yet (nbf)", spiffe_id=sid)
    if audience not in audiences:
        raise TokenAudienceError(f"audience {audience[:80]!r} is not in the token's 'aud'", spiffe_id=sid)
    return dt.datetime.fromtimestamp(exp, dt.UTC)


def _refuse_key_headers(token: CompactJws, part: str, sid: str) -> None:
    forbidden = sorted(_FORBIDDEN_HEADER.intersection(token.header))
    if forbidden:
        raise TokenAlgorithmError(f"{part}: header parameter {forbidden[0]!r} is not allowed", spiffe_id=sid)


def _check_headers(c: CompactJws, p: CompactJws, sid: str) -> str:
    """Refuse alg confusion and key injection; return the PQC part's ``kid``."""
    _refuse_key_headers(c, "classical part", sid)
    _refuse_key_headers(p, "PQC part", sid)
    classical.check_algorithm(c.header.get("alg"))
    if p.header.get("alg") != ALG_ML_DSA_65:
        raise TokenAlgorithmError(
            f"PQC part: alg must be {ALG_ML_DSA_65!r}, got {str(p.header.get('alg'))[:40]!r}", spiffe_id=sid
        )
    unknown = set(p.header) - _PQC_HEADER_ALLOWED
    if unknown:
        raise TokenMalformedError(
            f"PQC part: unknown header parameter {sorted(unknown)[0][:40]!r}", spiffe_id=sid
        )
    if p.header_str("typ") not in (None, "JWT"):
        raise TokenMalformedError("PQC part: typ must be 'JWT'", spiffe_id=sid)
    kid = p.header_str("kid")
    if not kid:
        raise TokenKeyError("PQC part: header has no key ID", spiffe_id=sid)
    return kid


def validate(
    token: HybridJwtSvid,
    audience: str,
    *,
    jwt_bundles: Mapping[TrustDomain, bytes],
    pqc_jwt_bundles: Mapping[TrustDomain, PqcJwtBundle],
    pqc_bundles: BundleSource,
    now: dt.datetime | None = None,
) -> VerifiedJwtSvid:
    """Validate both parts of a hybrid JWT-SVID for ``audience``.

    ``jwt_bundles`` are the classical JWT bundles (JWKS bytes, as the Workload API carries them);
    ``pqc_jwt_bundles`` the PQC JWT bundles; ``pqc_bundles`` the PQC X.509 bundles (roots) that
    certify the PQC JWT keys. Each trust domain is checked only against its own bundles. Cheap
    structural checks run first, then the classical signature, then the ML-DSA-65 one.
    """
    when = now or dt.datetime.now(dt.UTC)
    if (
        not isinstance(token, HybridJwtSvid)
        or not isinstance(token.classical, str)
        or not isinstance(token.pqc, str)
    ):
        raise TokenMalformedError("a hybrid JWT-SVID needs both parts as strings")
    if not token.pqc:
        raise TokenBindingError("the PQC part is missing")
    c = CompactJws.parse(token.classical, what="classical part")
    p = CompactJws.parse(token.pqc, what="PQC part")
    claims = _claims(c, "classical part")
    spiffe_id = _subject(claims)
    sid = str(spiffe_id)
    kid = _check_headers(c, p, sid)
    # Binding: one payload, and the PQC header names this very classical token.
    if not hmac.compare_digest(c.payload_segment, p.payload_segment):
        raise TokenBindingError("the PQC part signs other claims than the classical part", spiffe_id=sid)
    bound = p.header_str(BINDING_HEADER)
    if bound is None or not hmac.compare_digest(bound, binding_of(token.classical)):
        raise TokenBindingError("the PQC part was made for another classical token", spiffe_id=sid)
    expiry = _check_claims(claims, spiffe_id, audience, when)
    classical.verify_signature(token.classical, spiffe_id, c.header, jwt_bundles)
    td = spiffe_id.trust_domain
    pqc_jwt = pqc_jwt_bundles.get(td)
    if pqc_jwt is None:
        raise TokenKeyError(f"no PQC JWT bundle for trust domain {td}", spiffe_id=sid)
    try:
        pqc_bundle = pqc_bundles.get_bundle_for_trust_domain(td)
    except BundleError:
        raise TokenKeyError(f"no PQC bundle (roots) for trust domain {td}", spiffe_id=sid) from None
    # A key a revoked intermediate certified is refused like what it signed (RevokedError, "revoked").
    jwk = pqc_jwt.verified_key(kid, roots=pqc_bundle.authorities, at=when, revoked=pqc_bundle.revoked)
    verify_mldsa(p, jwk.key, spiffe_id=sid)
    return VerifiedJwtSvid(spiffe_id, MappingProxyType(claims), expiry)


def claimed_expiry(classical_token: str) -> dt.datetime:
    """The ``exp`` claim of a token, *not verified*: bookkeeping for a token :func:`sign_pqc_part`
    already checked (the CA keeps a signer published until the last token it signed expires)."""
    c = CompactJws.parse(classical_token, what="classical part")
    exp = _int_claim(_claims(c, "classical part"), "exp", "", required=True)
    assert exp is not None  # required=True
    return dt.datetime.fromtimestamp(exp, dt.UTC)


def sign_pqc_part(
    classical_token: str,
    signer: TrustDomainSigner,
    *,
    trust_domain: TrustDomain,
    jwt_bundles: Mapping[TrustDomain, bytes],
    now: dt.datetime | None = None,
) -> HybridJwtSvid:
    """The signer's side (the PQC CA): add the PQC part to a classical JWT-SVID of ``trust_domain``.

    The classical token is verified first — its signature under the trust domain's classical JWT
    bundle, its subject in ``trust_domain``, not expired, an allowed algorithm — so the CA never
    PQ-signs claims that SPIRE did not sign. The audience is not checked: it is copied, not consumed.
    """
    when = now or dt.datetime.now(dt.UTC)
    c = CompactJws.parse(classical_token, what="classical part")
    claims = _claims(c, "classical part")
    spiffe_id = _subject(claims)
    sid = str(spiffe_id)
    if spiffe_id.trust_domain != trust_domain:
        raise IdentityMismatchError(
            f"the token is of trust domain {spiffe_id.trust_domain}, not {trust_domain}", spiffe_id=sid
        )
    _refuse_key_headers(c, "classical part", sid)
    aud = claims.get("aud")
    first = aud if isinstance(aud, str) else (aud[0] if isinstance(aud, list) and aud else "")
    _check_claims(claims, spiffe_id, str(first), when)
    classical.verify_signature(classical_token, spiffe_id, c.header, jwt_bundles)
    header = {
        "alg": ALG_ML_DSA_65,
        "kid": AkpPublicJwk(signer.key.public_key()).thumbprint(),
        "typ": "JWT",
        BINDING_HEADER: binding_of(classical_token),
    }
    return HybridJwtSvid(classical_token, sign_compact(header, c.payload_segment, signer.key))
