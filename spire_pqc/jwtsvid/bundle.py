"""The PQC JWT bundle of a trust domain: a JWK Set of ML-DSA-65 ``AKP`` keys, each certified.

Each entry is a SPIFFE ``jwt-svid`` JWK (Trust Domain and Bundle §4) with RFC 9964 members::

    {"use": "jwt-svid", "kty": "AKP", "alg": "ML-DSA-65", "pub": "<base64url>",
     "kid": "<RFC 7638 thumbprint over alg, kty, pub>",
     "x5c": ["<signer certificate>", "<its intermediate PQC CA>"]}

``kid`` must equal the key's thumbprint, and ``x5c`` (standard base64 DER, RFC 7517 §4.7) must chain to
one of the trust domain's PQC roots with a trust-domain signer for JWT-SVIDs
(:mod:`spire_pqc.x509.signer`) whose key is ``pub``. So the JWT bundle needs no trust of its own:
whoever holds the PQC roots can tell a genuine key from an injected one, even if the channel that
delivered the bundle is broken classically. Keys rotate with the intermediate that certifies them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spire_pqc._internal import strictjson
from spire_pqc.bundle import MAX_BUNDLE_BYTES
from spire_pqc.errors import BundleError, ParseError, RevokedError, TokenKeyError, VerificationError
from spire_pqc.jwtsvid.jws import AkpPublicJwk
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.certs import mldsa_public_key
from spire_pqc.x509.load import load_der_certificate
from spire_pqc.x509.signer import KP_JWT_SVID, TrustDomainSigner, verify_signer

__all__ = ["MAX_JWT_KEYS", "PqcJwtBundle", "PqcJwtKey", "merge_jwks", "revoked_issuer"]

#: More keys than any rotation needs (next, active and retiring signers of a few HA servers).
MAX_JWT_KEYS = 64
_MAX_X5C = 3
_USE_JWT = "jwt-svid"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class PqcJwtKey:
    """One AKP key of a PQC JWT bundle with its certificate chain (signer certificate first)."""

    jwk: AkpPublicJwk
    chain: tuple[x509.Certificate, ...] = field(repr=False)

    @property
    def kid(self) -> str:
        return self.jwk.thumbprint()

    def entry(self) -> dict[str, Any]:
        """The JWK Set entry (``use``, AKP members, ``kid``, ``x5c``)."""
        x5c = [base64.b64encode(_der(cert)).decode("ascii") for cert in self.chain]
        return {"use": _USE_JWT, **self.jwk.to_json(), "x5c": x5c}

    @classmethod
    def from_signer(cls, signer: TrustDomainSigner) -> PqcJwtKey:
        return cls(AkpPublicJwk(signer.key.public_key()), signer.chain)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], *, what: str) -> PqcJwtKey:
        jwk = AkpPublicJwk.from_json(entry, what=what, error=BundleError)
        if entry.get("kid") != jwk.thumbprint():
            raise BundleError(f"{what}: 'kid' must be the key's RFC 7638 thumbprint ({jwk.thumbprint()})")
        x5c = entry.get("x5c")
        if not isinstance(x5c, list | tuple) or not 1 <= len(x5c) <= _MAX_X5C:
            raise BundleError(f"{what}: 'x5c' must hold the signer certificate and its intermediate")
        chain = []
        for index, item in enumerate(x5c):
            if not isinstance(item, str):
                raise BundleError(f"{what}: x5c[{index}] is not a string")
            try:
                der = base64.b64decode(item, validate=True)
                chain.append(load_der_certificate(der, what=f"{what}: x5c[{index}]", public_key=False))
            except (binascii.Error, ValueError) as exc:
                raise BundleError(f"{what}: x5c[{index}] is not base64 ({exc})") from None
            except ParseError as exc:
                raise BundleError(str(exc)) from None
        try:
            certified = mldsa_public_key(chain[0])
        except VerificationError as exc:
            raise BundleError(f"{what}: x5c[0] does not hold an ML-DSA-65 key ({exc})") from None
        if certified != jwk.key:
            raise BundleError(f"{what}: x5c[0] certifies another key than 'pub'")
        return cls(jwk, tuple(chain))


class PqcJwtBundle:
    """The PQC JWT keys of one trust domain, by ``kid``. Immutable; lookup verifies before it trusts."""

    __slots__ = ("_keys", "trust_domain")

    def __init__(self, trust_domain: TrustDomain, keys: Iterable[PqcJwtKey] = ()) -> None:
        table: dict[str, PqcJwtKey] = {}
        for key in keys:
            if key.kid in table:
                raise BundleError(f"PQC JWT bundle of {trust_domain}: duplicate kid {key.kid}")
            table[key.kid] = key
        if len(table) > MAX_JWT_KEYS:
            raise BundleError(f"PQC JWT bundle of {trust_domain}: {len(table)} keys, at most {MAX_JWT_KEYS}")
        self.trust_domain = trust_domain
        self._keys: Mapping[str, PqcJwtKey] = MappingProxyType(table)

    @classmethod
    def from_signers(cls, trust_domain: TrustDomain, signers: Iterable[TrustDomainSigner]) -> PqcJwtBundle:
        return cls(trust_domain, (PqcJwtKey.from_signer(s) for s in signers))

    @classmethod
    def from_entries(
        cls, trust_domain: TrustDomain, entries: Iterable[Mapping[str, Any]], *, what: str
    ) -> PqcJwtBundle:
        """Keys from JWK Set entries. Entries of another ``use`` or ``kty`` are skipped, as the SPIFFE
        bundle format requires; an AKP entry that is not a well-formed, certified ML-DSA-65 key is an
        error (it is meant for us and is broken)."""
        keys = []
        for index, entry in enumerate(entries):
            where = f"{what}: keys[{index}]"
            if not isinstance(entry, Mapping):
                raise BundleError(f"{where}: not a JSON object")
            if entry.get("use") != _USE_JWT or entry.get("kty") != "AKP":
                continue
            keys.append(PqcJwtKey.from_entry(entry, what=where))
        return cls(trust_domain, keys)

    @classmethod
    def parse(cls, trust_domain: TrustDomain, data: bytes | str) -> PqcJwtBundle:
        """Parse a JWK Set (the ``FetchPQCJWTBundles`` value of a trust domain)."""
        what = f"PQC JWT bundle of {trust_domain}"
        document = strictjson.loads(data, what=what, max_bytes=MAX_BUNDLE_BYTES, error=BundleError)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise BundleError(f"{what}: not a JWK Set (no 'keys' array)")
        return cls.from_entries(trust_domain, keys, what=what)

    def to_jwks(self) -> bytes:
        return strictjson.dumps_compact({"keys": [key.entry() for key in self._keys.values()]})

    def entries(self) -> list[dict[str, Any]]:
        return [key.entry() for key in self._keys.values()]

    def verified_key(
        self,
        kid: str,
        *,
        roots: Sequence[x509.Certificate],
        at: dt.datetime,
        revoked: Collection[str] = (),
    ) -> AkpPublicJwk:
        """The key ``kid`` once its chain verifies to ``roots`` as a JWT-SVID signer at ``at``, certified
        by no intermediate in ``revoked`` (key ids, hex, as the trust domain's PQC bundle lists them).

        Raises TokenKeyError when the bundle has no such key, RevokedError (naming the key and the
        intermediate) when a revoked intermediate certified it, or a VerificationError subclass naming
        the chain check that failed."""
        key = self._keys.get(kid)
        who = f"spiffe://{self.trust_domain.name}"
        if key is None:
            raise TokenKeyError(
                f"key {kid[:60]!r} is not in the PQC JWT bundle of {self.trust_domain}", spiffe_id=who
            )
        verify_signer(key.chain, roots, trust_domain=self.trust_domain.name, purpose=KP_JWT_SVID, at=at)
        refused = revoked_issuer(key, revoked)
        if refused is not None:
            raise RevokedError(
                f"PQC JWT key {kid[:60]!r} was certified by revoked intermediate PQC CA {refused[:16]} "
                "(revoked by the trust domain's PQC bundle)",
                spiffe_id=who,
            )
        return key.jwk

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[PqcJwtKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PqcJwtBundle)
            and other.trust_domain == self.trust_domain
            and {k: _chain_der(v) for k, v in other._keys.items()}
            == {k: _chain_der(v) for k, v in self._keys.items()}
        )

    def __hash__(self) -> int:
        return hash((self.trust_domain, frozenset(self._keys)))

    def __repr__(self) -> str:
        return f"PqcJwtBundle({self.trust_domain.name!r}, kids={sorted(self._keys)})"


def merge_jwks(sets: Sequence[bytes]) -> bytes:
    """One JWK Set with the keys of every set in ``sets`` (the first entry of each ``kid`` wins); empty
    sets are skipped, b"" when all are. JSON only: a set that does not parse is left out (the merged
    keys are verified like any bundle's when they are used)."""
    keys: dict[str, Any] = {}
    anonymous: list[Any] = []
    for data in sets:
        if not data:
            continue
        try:
            document = strictjson.loads(data, what="JWK Set", max_bytes=MAX_BUNDLE_BYTES, error=BundleError)
        except BundleError:
            continue
        entries = document.get("keys") if isinstance(document, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            if isinstance(kid, str):
                keys.setdefault(kid, entry)
            else:
                anonymous.append(entry)
    if not keys and not anonymous:
        return b""
    return strictjson.dumps_compact({"keys": [*keys.values(), *anonymous]})


def revoked_issuer(key: PqcJwtKey, revoked: Collection[str]) -> str | None:
    """The key id of the first certificate above ``key``'s signer certificate that ``revoked`` lists."""
    if not revoked:
        return None
    wanted = {k.lower() for k in revoked}
    for cert in key.chain[1:]:
        try:
            key_id = mldsa_public_key(cert).key_id().hex()
        except VerificationError:
            continue  # not an ML-DSA-65 CA: verify_signer refuses such a chain anyway
        if key_id in wanted:
            return key_id
    return None


def _chain_der(key: PqcJwtKey) -> tuple[bytes, ...]:
    return tuple(_der(cert) for cert in key.chain)
