"""SPIFFE IDs, trust domains and ID matchers.

A :class:`SpiffeId` or :class:`TrustDomain` can only exist if it is valid: the constructors and
``parse`` functions check the SPIFFE ID specification (``spiffe/spiffe:standards/SPIFFE-ID.md``)
and raise :class:`~spire_pqc.errors.SpiffeIdError` with
the reason otherwise. There is no normalisation: ``SPIFFE://Example.org`` is rejected, not
lower-cased, because two spellings of one identity would make comparisons unsafe.

Matchers decide whether a (verified) SPIFFE ID is acceptable. They return ``None`` or raise
:class:`~spire_pqc.errors.AuthorizationError` naming the ID and the reason; there is no boolean
result to forget to check, and an empty allow-list matches nothing.

Example::

    >>> from spire_pqc.spiffeid import SpiffeId, TrustDomain, match_member_of
    >>> sid = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
    >>> sid.trust_domain, sid.path
    (TrustDomain('example.org'), '/ns/prod/sa/web')
    >>> sid.is_member_of(TrustDomain.parse("example.org"))
    True
    >>> match_member_of("example.org")(sid)  # returns None: allowed
    >>> str(SpiffeId.from_parts(sid.trust_domain, "/db"))
    'spiffe://example.org/db'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spire_pqc.errors import AuthorizationError, SpiffeIdError

__all__ = [
    "MAX_ID_BYTES",
    "MAX_TRUST_DOMAIN_BYTES",
    "Matcher",
    "SpiffeId",
    "TrustDomain",
    "match_any",
    "match_id",
    "match_member_of",
    "match_one_of",
]

SCHEME_PREFIX = "spiffe://"
#: SPIFFE-ID.md §2.3: implementations must support, and should not generate, longer IDs.
MAX_ID_BYTES = 2048
#: SPIFFE-ID.md §2.3: RFC 3986 limits the host component to 255 characters.
MAX_TRUST_DOMAIN_BYTES = 255

# SPIFFE-ID.md §2.1 / §2.2 (665a28f): trust domain names use [a-z0-9.-_], path segments
# [a-zA-Z0-9.-_]. Percent-encoding is not allowed, so everything is plain ASCII.
_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_SEGMENT_CHARS = _TD_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _show(text: str, limit: int = 80) -> str:
    """A bounded ``repr`` of untrusted input for error messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _td_problem(name: str) -> str | None:
    """Why ``name`` is not a valid trust domain name, or None if it is."""
    if not name:
        return "trust domain is empty"
    if len(name) > MAX_TRUST_DOMAIN_BYTES:
        return f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
    # userinfo is reported before port: in 'user:pw@host' the ':' belongs to the userinfo.
    if "@" in name:
        return "trust domain must not have userinfo ('@' is not allowed)"
    if ":" in name:
        return "trust domain must not have a port (':' is not allowed)"
    for i, ch in enumerate(name):
        if ch in _TD_CHARS:
            continue
        if ch.isascii() and ch.isupper():
            return f"trust domain must be lower case (found {ch!r} at position {i})"
        return f"trust domain contains {ch!r} at position {i}; only a-z, 0-9, '.', '-' and '_' are allowed"
    return None


def _path_problem(path: str) -> str | None:
    """Why ``path`` is not a valid SPIFFE ID path ('' or '/seg/seg...'), or None if it is."""
    if not path:
        return None
    if not path.startswith("/"):
        return "path must be empty or start with '/'"
    if path.endswith("/"):
        return "path must not end with '/'"
    for segment in path[1:].split("/"):
        if not segment:
            return "path must not contain empty segments ('//')"
        if segment in {".", ".."}:
            return f"path must not contain {segment!r} segments"
        for ch in segment:
            if ch not in _SEGMENT_CHARS:
                if ch == "?":
                    return "SPIFFE IDs must not have a query ('?')"
                if ch == "#":
                    return "SPIFFE IDs must not have a fragment ('#')"
                if ch == "%":
                    return "path must not be percent-encoded ('%')"
                return f"path contains {ch!r}; only a-z, A-Z, 0-9, '.', '-' and '_' are allowed in segments"
    return None


@dataclass(frozen=True, order=True, slots=True)
class TrustDomain:
    """A SPIFFE trust domain name such as ``example.org`` (valid by construction)."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise SpiffeIdError(f"trust domain name must be a str, not {type(self.name).__name__}")
        problem = _td_problem(self.name)
        if problem:
            raise SpiffeIdError(f"invalid trust domain {_show(self.name)}: {problem}")

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Parse ``example.org`` or its SPIFFE ID form ``spiffe://example.org``.

        A SPIFFE ID with a path is refused: silently dropping the path would hide a mistake. Use
        ``SpiffeId.parse(text).trust_domain`` to take the trust domain of a workload ID.
        """
        if not isinstance(text, str):
            raise SpiffeIdError(f"trust domain must be a str, not {type(text).__name__}")
        if "://" in text or text.lower().startswith("spiffe:"):
            sid = SpiffeId.parse(text)
            if not sid.is_root:
                raise SpiffeIdError(
                    f"invalid trust domain {_show(text)}: a trust domain ID has no path (got {sid.path!r})"
                )
            return sid.trust_domain
        return cls(text)

    def id_string(self) -> str:
        """The trust domain's SPIFFE ID, ``spiffe://<name>`` (used as a key in Workload API maps)."""
        return SCHEME_PREFIX + self.name

    def spiffe_id(self) -> SpiffeId:
        """The trust domain's SPIFFE ID (no path), e.g. the URI SAN of a CA certificate."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"TrustDomain({self.name!r})"


@dataclass(frozen=True, order=True, slots=True)
class SpiffeId:
    """A SPIFFE ID: a trust domain plus a path that is empty or ``/seg/seg...`` (valid by construction)."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise SpiffeIdError(f"trust_domain must be a TrustDomain, not {type(self.trust_domain).__name__}")
        if not isinstance(self.path, str):
            raise SpiffeIdError(f"path must be a str, not {type(self.path).__name__}")
        problem = _path_problem(self.path)
        if problem:
            raise SpiffeIdError(f"invalid SPIFFE ID path {_show(self.path)}: {problem}")
        if len(SCHEME_PREFIX) + len(self.trust_domain.name) + len(self.path) > MAX_ID_BYTES:
            raise SpiffeIdError(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://<trust domain>[/<path>]`` exactly as the specification allows."""
        if not isinstance(text, str):
            raise SpiffeIdError(f"SPIFFE ID must be a str, not {type(text).__name__}")

        def bad(reason: str) -> SpiffeIdError:
            return SpiffeIdError(f"invalid SPIFFE ID {_show(text)}: {reason}")

        if not text:
            raise bad("empty")
        # Every allowed character is ASCII, so characters and bytes coincide; checking the encoded
        # length first also bounds the work done on hostile input.
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise bad(f"longer than {MAX_ID_BYTES} bytes")
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise bad("missing the 'spiffe://' prefix")
        if scheme != "spiffe":
            if scheme.lower() == "spiffe":
                raise bad("scheme must be lower case 'spiffe'")
            raise bad(f"scheme must be 'spiffe', not {_show(scheme, 20)}")
        # Query and fragment are checked on the whole remainder so that they are named even when
        # they follow the trust domain directly (spiffe://example.org?x).
        if "?" in rest:
            raise bad("SPIFFE IDs must not have a query ('?')")
        if "#" in rest:
            raise bad("SPIFFE IDs must not have a fragment ('#')")
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if not authority:
            raise bad("trust domain is missing")
        problem = _td_problem(authority) or _path_problem(path)
        if problem:
            raise bad(problem)
        return cls(TrustDomain(authority), path)

    @classmethod
    def from_parts(cls, trust_domain: TrustDomain | str, path: str = "") -> SpiffeId:
        """Build an ID from a trust domain (object or name) and a path that starts with ``/`` (or '')."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return cls(td, path)

    @property
    def is_root(self) -> bool:
        """True for a trust domain's own ID (no path), as carried by CA certificates."""
        return not self.path

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """True if this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return SCHEME_PREFIX + self.trust_domain.name + self.path

    def __repr__(self) -> str:
        return f"SpiffeId({str(self)!r})"


# --- matchers ----------------------------------------------------------------------------------


class Matcher(Protocol):
    """Accepts a SPIFFE ID by returning None, or refuses it by raising AuthorizationError."""

    def __call__(self, spiffe_id: SpiffeId, /) -> None: ...


def _as_id(value: SpiffeId | str) -> SpiffeId:
    return value if isinstance(value, SpiffeId) else SpiffeId.parse(value)


def _refuse(spiffe_id: SpiffeId, why: str) -> AuthorizationError:
    return AuthorizationError(f"SPIFFE ID {spiffe_id} is not allowed: {why}")


@dataclass(frozen=True, slots=True)
class _MatchAny:
    def __call__(self, spiffe_id: SpiffeId, /) -> None:
        return None

    def __repr__(self) -> str:
        return "match_any()"


@dataclass(frozen=True, slots=True)
class _MatchId:
    expected: SpiffeId

    def __call__(self, spiffe_id: SpiffeId, /) -> None:
        if spiffe_id != self.expected:
            raise _refuse(spiffe_id, f"expected {self.expected}")

    def __repr__(self) -> str:
        return f"match_id({str(self.expected)!r})"


@dataclass(frozen=True, slots=True)
class _MatchOneOf:
    allowed: frozenset[SpiffeId]

    def __call__(self, spiffe_id: SpiffeId, /) -> None:
        if not self.allowed:
            raise _refuse(spiffe_id, "the allow-list is empty, so no ID matches")
        if spiffe_id not in self.allowed:
            listed = sorted(self.allowed)
            shown = ", ".join(str(i) for i in listed[:5])
            more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
            raise _refuse(spiffe_id, f"not one of {shown}{more}")

    def __repr__(self) -> str:
        return "match_one_of(" + ", ".join(repr(str(i)) for i in sorted(self.allowed)) + ")"


@dataclass(frozen=True, slots=True)
class _MatchMemberOf:
    trust_domain: TrustDomain

    def __call__(self, spiffe_id: SpiffeId, /) -> None:
        if not spiffe_id.is_member_of(self.trust_domain):
            raise _refuse(spiffe_id, f"not a member of trust domain {self.trust_domain}")

    def __repr__(self) -> str:
        return f"match_member_of({self.trust_domain.name!r})"


def match_any() -> Matcher:
    """Accept every SPIFFE ID. Named explicitly so that accepting anyone is a visible choice."""
    return _MatchAny()


def match_id(expected: SpiffeId | str) -> Matcher:
    """Accept exactly ``expected``."""
    return _MatchId(_as_id(expected))


def match_one_of(*allowed: SpiffeId | str) -> Matcher:
    """Accept any of ``allowed``. With no IDs it accepts nothing (fails closed)."""
    return _MatchOneOf(frozenset(_as_id(a) for a in allowed))


def match_member_of(trust_domain: TrustDomain | str) -> Matcher:
    """Accept every ID of ``trust_domain`` (a ``TrustDomain``, a name or ``spiffe://name``)."""
    td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
    return _MatchMemberOf(td)
