"""X.509 trust bundles: one per trust domain, never merged.

An :class:`X509Bundle` is the set of CA certificates (authorities) trusted for *one* trust domain.
The same type holds a trust domain's classical bundle (SPIRE's EC/RSA roots) and its PQC bundle
(ML-DSA-65 roots); callers keep them apart by using one :class:`BundleSet` per kind, as
:func:`spire_pqc.svid.verify_hybrid_svid` does with ``classical_bundles=`` and ``pqc_bundles=``.

A :class:`BundleSet` maps trust domains to bundles. It never merges trust domains (a peer of
trust domain A is only ever checked against A's authorities, unlike py-spiffe, STYLE.md §4), and
lookup raises :class:`~spire_pqc.errors.BundleError` instead of returning ``None``. Anything with
``get_bundle_for_trust_domain`` is a :class:`BundleSource`: a bundle, a set, or a live source.

Formats (``spiffe/spiffe:standards/SPIFFE_Workload_API.md``, ``SPIFFE_Trust_Domain_and_Bundle.md``):

* PEM (one or more ``CERTIFICATE`` blocks) and concatenated DER (the Workload API ``bundle`` and
  ``federated_bundles`` values): :meth:`X509Bundle.from_pem`, :meth:`X509Bundle.from_der`, and
  back with :meth:`X509Bundle.to_pem` / :meth:`X509Bundle.to_der`.
* The SPIFFE bundle JSON (a JWK Set, SPIFFE Trust Domain and Bundle §4): :class:`SpiffeBundle`
  (federation's signed PQC bundle documents).

Every parse failure raises :class:`~spire_pqc.errors.BundleError` with a message that names the
input and, for JSON, the index of the offending ``keys`` entry. Inputs are bounded by
:data:`MAX_BUNDLE_BYTES`.

Example::

    bundle = X509Bundle.from_pem(TrustDomain.parse("example.org"), Path("bundle.pem").read_bytes())
    pqc = BundleSet.from_workload_api({"spiffe://example.org": der_bytes})
    roots = pqc.get(spiffe_id.trust_domain).authorities   # raises BundleError if absent
    doc = SpiffeBundle.parse(bundle.trust_domain, http_body)
    print(doc.sequence, len(doc.x509_authorities))
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from spire_pqc.errors import BundleError, ParseError, SpiffeIdError, UnknownTrustDomainError
from spire_pqc.spiffeid import TrustDomain
from spire_pqc.x509.load import (
    CRYPTOGRAPHY_PARSE_ERRORS,
    check_parsed,
    load_der_certificate,
    load_der_certificates,
    load_pem_certificates,
)

__all__ = [
    "MAX_BUNDLE_BYTES",
    "BundleSet",
    "BundleSource",
    "SpiffeBundle",
    "X509Bundle",
]

#: Upper bound on any serialized bundle or bundle map accepted here. An ML-DSA-65 CA certificate
#: is about 5.5 KB of DER (7.4 KB in base64), so this leaves room for hundreds of authorities while
#: keeping a hostile or corrupt input from exhausting memory.
MAX_BUNDLE_BYTES = 8 * 1024 * 1024

_USE_X509 = "x509-svid"
_USE_JWT = "jwt-svid"
# RFC 7518 §6 key types, plus "AKP" (draft-ietf-cose-dilithium) used for ML-DSA keys.
_KNOWN_KTY = frozenset({"EC", "RSA", "OKP", "AKP"})
_ML_DSA_65_OID = "2.16.840.1.101.3.4.3.18"


def _check_size(data: bytes | str, what: str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{what}: {len(data)} bytes exceeds the limit of {MAX_BUNDLE_BYTES}")
    return bytes(data)


def _bundle_error(exc: ParseError) -> BundleError:
    return BundleError(str(exc))


def _load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    # An authority whose key algorithm cryptography does not implement is kept (verifiers skip it);
    # a malformed key, name or extension is refused here, with its position.
    try:
        return load_der_certificate(der, what=what, public_key=False)
    except ParseError as exc:
        raise _bundle_error(exc) from exc


def _check_parseable(cert: x509.Certificate, what: str) -> None:
    """Parse the parts cryptography parses lazily so a broken authority is refused when a bundle is
    built, with its position, instead of failing later in a verifier."""
    try:
        check_parsed(cert, what=what, public_key=False)
    except ParseError as exc:
        raise _bundle_error(exc) from exc


def _pem_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return load_pem_certificates(data, what=what, public_key=False)
    except ParseError as exc:
        raise _bundle_error(exc) from exc


def _der_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return list(load_der_certificates(data, what=what, public_key=False))
    except ParseError as exc:
        raise _bundle_error(exc) from exc


def _dedupe(certificates: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: set[x509.Certificate] = set()
    unique = []
    for cert in certificates:
        if cert not in seen:
            seen.add(cert)
            unique.append(cert)
    return tuple(unique)


# --- X509Bundle --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class X509Bundle:
    """The X.509 authorities (CA certificates) of one trust domain.

    ``authorities`` keeps the given order; exact duplicates are dropped. An empty bundle is valid
    and trusts nothing (the SPIFFE bundle format uses an empty key set to revoke every key).
    """

    trust_domain: TrustDomain
    authorities: tuple[x509.Certificate, ...] = ()
    #: Key ids (hex SHA-256 of the SubjectPublicKeyInfo) of revoked intermediate CAs of this trust
    #: domain: verifiers refuse every chain through them and every SvidBinding they made (PQC bundles).
    revoked: frozenset[str] = frozenset()

    def __init__(
        self,
        trust_domain: TrustDomain,
        authorities: Sequence[x509.Certificate] = (),
        *,
        revoked: Iterable[str] = (),
    ) -> None:
        if not isinstance(trust_domain, TrustDomain):
            raise BundleError(f"trust_domain must be a TrustDomain, not {type(trust_domain).__name__}")
        for index, cert in enumerate(authorities):
            if not isinstance(cert, x509.Certificate):
                raise BundleError(f"bundle of {trust_domain}: authority {index} is a {type(cert).__name__}")
            _check_parseable(cert, f"bundle of {trust_domain}: authority {index}")
        object.__setattr__(self, "trust_domain", trust_domain)
        object.__setattr__(self, "authorities", _dedupe(authorities))
        object.__setattr__(self, "revoked", frozenset(k.lower() for k in revoked))

    @classmethod
    def from_pem(cls, trust_domain: TrustDomain, data: bytes | str) -> X509Bundle:
        """Parse one or more PEM ``CERTIFICATE`` blocks (text between blocks is ignored).

        A PEM input without any certificate is refused: it is almost always the wrong file.
        """
        what = f"PEM bundle of {trust_domain}"
        return cls(trust_domain, _pem_certificates(_check_size(data, what), what))

    @classmethod
    def from_der(cls, trust_domain: TrustDomain, data: bytes) -> X509Bundle:
        """Parse concatenated DER certificates (the Workload API format). Empty input → empty bundle."""
        what = f"DER bundle of {trust_domain}"
        return cls(trust_domain, _der_certificates(_check_size(data, what), what))

    def to_der(self) -> bytes:
        """The authorities as concatenated DER, as the Workload API carries them."""
        return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in self.authorities)

    def to_pem(self) -> bytes:
        """The authorities as consecutive PEM ``CERTIFICATE`` blocks."""
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in self.authorities)

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        """A single bundle is a :class:`BundleSource` for its own trust domain only."""
        if trust_domain != self.trust_domain:
            raise UnknownTrustDomainError(
                f"no bundle for trust domain {trust_domain} (this bundle is for {self.trust_domain})"
            )
        return self

    def __repr__(self) -> str:
        revoked = f", {len(self.revoked)} revoked" if self.revoked else ""
        return f"X509Bundle({self.trust_domain.name!r}, {len(self.authorities)} authorities{revoked})"


class BundleSource(Protocol):
    """Anything that returns the bundle of a trust domain, raising BundleError when it has none."""

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle: ...


# --- BundleSet ---------------------------------------------------------------------------------


def _spiffe_trust_domain_of(cert: x509.Certificate, what: str) -> TrustDomain | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except CRYPTOGRAPHY_PARSE_ERRORS as exc:
        raise BundleError(f"{what}: unreadable extensions ({exc})") from exc
    uris = [
        u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.lower().startswith("spiffe:")
    ]
    if not uris:
        return None
    if len(uris) > 1:
        raise BundleError(f"{what}: {len(uris)} SPIFFE URI SANs; a CA certificate has at most one")
    # Only the authority decides the trust domain. Older CAs carry "spiffe://td/" (the trailing
    # slash of the spec's own example), which SpiffeId.parse rightly refuses for workload IDs.
    if not uris[0].startswith("spiffe://"):
        raise BundleError(f"{what}: URI SAN {uris[0][:80]!r} is not of the form spiffe://<trust domain>")
    try:
        return TrustDomain(uris[0][len("spiffe://") :].split("/", 1)[0])
    except SpiffeIdError as exc:
        raise BundleError(f"{what}: {exc}") from exc


def _subject_of(cert: x509.Certificate) -> str:
    # Certificates handed in by callers may not have been parsed by this module; a name that does
    # not parse must not turn an error message into a different exception.
    try:
        return cert.subject.rfc4514_string() or "empty subject"
    except CRYPTOGRAPHY_PARSE_ERRORS:
        return "unparseable subject"


class BundleSet:
    """An immutable map trust domain → :class:`X509Bundle`; one bundle per trust domain, never merged.

    Iterating yields the bundles in trust-domain order. ``get`` raises BundleError when a trust
    domain has no bundle, so a missing bundle can never be mistaken for "trust anything".
    """

    __slots__ = ("_bundles",)

    def __init__(self, bundles: Iterable[X509Bundle] = ()) -> None:
        table: dict[TrustDomain, X509Bundle] = {}
        for bundle in bundles:
            if not isinstance(bundle, X509Bundle):
                raise BundleError(f"a BundleSet holds X509Bundle objects, not {type(bundle).__name__}")
            if bundle.trust_domain in table:
                raise BundleError(
                    f"two bundles for trust domain {bundle.trust_domain}; bundles are never merged"
                )
            table[bundle.trust_domain] = bundle
        self._bundles: Mapping[TrustDomain, X509Bundle] = MappingProxyType(dict(sorted(table.items())))

    @classmethod
    def from_certificates(
        cls, certificates: Iterable[x509.Certificate], *, trust_domain: TrustDomain | None = None
    ) -> BundleSet:
        """Group CA certificates by the trust domain of their SPIFFE URI SAN (``spiffe://<td>``).

        Certificates without a SPIFFE URI SAN (an upstream root, say) go to ``trust_domain``; when
        it is not given they are refused, because guessing their trust domain would merge trust.
        """
        groups: dict[TrustDomain, list[x509.Certificate]] = {}
        for index, cert in enumerate(certificates):
            what = f"certificate {index} ({_subject_of(cert)})"
            _check_parseable(cert, what)
            td = _spiffe_trust_domain_of(cert, what) or trust_domain
            if td is None:
                raise BundleError(f"{what}: no SPIFFE URI SAN, so its trust domain is unknown")
            groups.setdefault(td, []).append(cert)
        return cls(X509Bundle(td, certs) for td, certs in groups.items())

    @classmethod
    def from_workload_api(cls, bundles: Mapping[str, bytes]) -> BundleSet:
        """Parse a Workload API map (trust-domain SPIFFE ID → concatenated DER).

        An empty value means the bundle was redacted, so that trust domain is left out.
        """
        parsed = []
        for key, der in bundles.items():
            try:
                td = TrustDomain.parse(key)
            except SpiffeIdError as exc:
                raise BundleError(f"bundle map key {key[:80]!r}: {exc}") from exc
            if der:
                parsed.append(X509Bundle.from_der(td, der))
        return cls(parsed)

    def to_workload_api(self) -> dict[str, bytes]:
        """The Workload API form: ``{"spiffe://<td>": concatenated DER}``."""
        return {td.id_string(): bundle.to_der() for td, bundle in self._bundles.items()}

    def get(self, trust_domain: TrustDomain) -> X509Bundle:
        """The bundle of ``trust_domain``; raises BundleError if there is none."""
        try:
            return self._bundles[trust_domain]
        except KeyError:
            known = ", ".join(td.name for td in self._bundles) or "none"
            raise UnknownTrustDomainError(
                f"no bundle for trust domain {trust_domain} (known: {known})"
            ) from None

    def get_bundle_for_trust_domain(self, trust_domain: TrustDomain, /) -> X509Bundle:
        return self.get(trust_domain)

    def with_bundle(self, bundle: X509Bundle) -> BundleSet:
        """A new set where ``bundle`` *replaces* any bundle of its trust domain (rotation removes roots)."""
        return BundleSet(
            [*(b for b in self._bundles.values() if b.trust_domain != bundle.trust_domain), bundle]
        )

    def without(self, trust_domain: TrustDomain) -> BundleSet:
        """A new set without ``trust_domain`` (for example, when a federation relationship ends)."""
        return BundleSet(b for b in self._bundles.values() if b.trust_domain != trust_domain)

    @property
    def trust_domains(self) -> tuple[TrustDomain, ...]:
        return tuple(self._bundles)

    def __contains__(self, trust_domain: object) -> bool:
        return trust_domain in self._bundles

    def __iter__(self) -> Iterator[X509Bundle]:
        return iter(self._bundles.values())

    def __len__(self) -> int:
        return len(self._bundles)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BundleSet) and dict(self._bundles) == dict(other._bundles)

    def __hash__(self) -> int:
        return hash(tuple(self._bundles.items()))

    def __repr__(self) -> str:
        return "BundleSet(" + ", ".join(repr(b) for b in self._bundles.values()) + ")"


# --- SPIFFE bundle JSON ------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"duplicate JSON member {key[:80]!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BundleError(f"{name} is not JSON")


def _strict_json(data: bytes | str, what: str) -> Any:
    raw = _check_size(data, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{what}: not UTF-8 ({exc})") from exc
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except BundleError as exc:
        raise BundleError(f"{what}: {exc}") from exc
    except RecursionError:
        raise BundleError(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int-to-str digit limits
        raise BundleError(f"{what}: invalid JSON ({exc})") from exc


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_b64url(value: int, length: int | None = None) -> str:
    return _b64url(value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big"))


_EC_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def _jwk_key_params(cert: x509.Certificate) -> dict[str, str] | None:
    """RFC 7518 §6 public-key members for ``cert``'s key, or None if no JWK form is known."""
    try:
        if cert.public_key_algorithm_oid.dotted_string == _ML_DSA_65_OID:
            raw = cert.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"kty": "AKP", "alg": "ML-DSA-65", "pub": _b64url(raw)}
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_CURVES:
        crv, size = _EC_CURVES[key.curve.name]
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": _uint_b64url(numbers.x, size),
            "y": _uint_b64url(numbers.y, size),
        }
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint_b64url(rsa_numbers.n), "e": _uint_b64url(rsa_numbers.e)}
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": crv, "x": _b64url(raw)}
    return None


def _freeze(value: Any) -> Any:
    """Deep read-only copy of a JSON value (objects → mappingproxy, arrays → tuple)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def _check_uint(value: object, name: str, what: str, *, bits: int) -> int | None:
    """``None`` (absent) or an integer in [0, 2**bits); go-spiffe reads these as uint64 / int64."""
    if value is None:
        return None
    # bool is an int in Python, but JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise BundleError(f"{what}: {name} must be an integer in [0, 2^{bits}), got {str(value)[:40]}")
    return value


def _x509_entry(entry: Mapping[str, Any], where: str) -> x509.Certificate:
    if "kid" in entry:
        raise BundleError(f"{where}: x509-svid entries must not have a 'kid'")
    chain = entry.get("x5c")
    if not isinstance(chain, list) or len(chain) != 1 or not isinstance(chain[0], str):
        raise BundleError(f"{where}: 'x5c' must be an array holding exactly one base64 certificate")
    try:
        der = base64.b64decode(chain[0], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError(f"{where}: 'x5c' is not valid base64 ({exc})") from exc
    cert = _load_der_certificate(der, where)
    expected = _jwk_key_params(cert)
    if expected is not None:
        # The certificate is what is trusted; JWK members that contradict it mean a corrupt entry.
        for member, value in expected.items():
            if member in entry and entry[member] != value:
                raise BundleError(
                    f"{where}: JWK member {member!r} does not match the certificate's public key"
                )
    return cert


@dataclass(frozen=True)
class SpiffeBundle:
    """A SPIFFE bundle document (JWK Set) for one trust domain.

    ``jwt_authorities`` maps each ``kid`` to its complete JWK entry (with ``use`` and ``kid``), kept
    as an opaque read-only JSON object: spire-pqc does not verify JWT-SVIDs, but a bundle that
    passes through keeps its JWT keys.
    ``sequence`` is ``spiffe_sequence``; ``refresh_hint`` is ``spiffe_refresh_hint`` in seconds.
    """

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...] = ()
    jwt_authorities: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    sequence: int | None = None
    refresh_hint: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise BundleError(f"trust_domain must be a TrustDomain, not {type(self.trust_domain).__name__}")
        object.__setattr__(
            self, "x509_authorities", X509Bundle(self.trust_domain, self.x509_authorities).authorities
        )
        what = f"bundle of {self.trust_domain}"
        jwks: dict[str, dict[str, Any]] = {}
        for kid, jwk in self.jwt_authorities.items():
            if not isinstance(kid, str) or not kid:
                raise BundleError(f"{what}: JWT authority key ids must be non-empty strings")
            if not isinstance(jwk, Mapping):
                raise BundleError(f"{what}: JWT authority {kid!r} is not a JSON object")
            if jwk.get("kid", kid) != kid:
                raise BundleError(f"{what}: JWT authority {kid!r} carries a different kid")
            # Stored as the complete JWK entry, so a parsed bundle equals the one that was written.
            jwks[kid] = {**_thaw(jwk), "use": _USE_JWT, "kid": kid}
        object.__setattr__(self, "jwt_authorities", _freeze(jwks))
        _check_uint(self.sequence, "sequence", f"bundle of {self.trust_domain}", bits=64)
        _check_uint(self.refresh_hint, "refresh_hint", f"bundle of {self.trust_domain}", bits=63)

    @classmethod
    def parse(cls, trust_domain: TrustDomain, data: bytes | str) -> SpiffeBundle:
        """Parse a bundle document. The trust domain comes from configuration, never from the document."""
        what = f"SPIFFE bundle of {trust_domain}"
        return cls._from_object(trust_domain, _strict_json(data, what), what)

    @classmethod
    def _from_object(cls, trust_domain: TrustDomain, doc: Any, what: str) -> SpiffeBundle:
        if not isinstance(doc, dict):
            raise BundleError(f"{what}: the document must be a JSON object")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise BundleError(f"{what}: 'keys' must be present and be an array")
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: dict[str, dict[str, Any]] = {}
        for index, entry in enumerate(keys):
            where = f"{what}: keys[{index}]"
            if not isinstance(entry, dict):
                raise BundleError(f"{where}: not a JSON object")
            use, kty = entry.get("use"), entry.get("kty")
            # Trust Domain and Bundle §4: entries with an unknown use or key type are ignored.
            if use not in (_USE_X509, _USE_JWT):
                continue
            if not isinstance(kty, str):
                raise BundleError(f"{where}: 'kty' must be a string")
            if kty not in _KNOWN_KTY:
                continue
            if use == _USE_X509:
                x509_authorities.append(_x509_entry(entry, where))
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                raise BundleError(f"{where}: jwt-svid entries must have a non-empty string 'kid'")
            if kid in jwt_authorities:
                raise BundleError(f"{where}: duplicate kid {kid[:80]!r}")
            jwt_authorities[kid] = entry
        return cls(
            trust_domain,
            tuple(x509_authorities),
            jwt_authorities,
            _check_uint(doc.get("spiffe_sequence"), "spiffe_sequence", what, bits=64),
            _check_uint(doc.get("spiffe_refresh_hint"), "spiffe_refresh_hint", what, bits=63),
        )

    def to_json(self) -> bytes:
        """Serialize as a SPIFFE bundle document (x509-svid entries first, then jwt-svid)."""
        keys: list[dict[str, Any]] = []
        for cert in self.x509_authorities:
            params = _jwk_key_params(cert)
            if params is None:
                raise BundleError(f"bundle of {self.trust_domain}: no JWK form for the key of {cert.subject}")
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append({"use": _USE_X509, **params, "x5c": [base64.b64encode(der).decode("ascii")]})
        for jwk in self.jwt_authorities.values():
            keys.append(_thaw(jwk))
        doc: dict[str, Any] = {"keys": keys}
        if self.sequence is not None:
            doc["spiffe_sequence"] = self.sequence
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        return json.dumps(doc, indent=2, sort_keys=False).encode("utf-8")

    def x509_bundle(self) -> X509Bundle:
        """The X.509 authorities as an :class:`X509Bundle`."""
        return X509Bundle(self.trust_domain, self.x509_authorities)
